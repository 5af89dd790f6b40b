#!/usr/bin/env bash
# Installs the system packages Aqueduct runs and is tested with (HAProxy),
# with apt, when they are missing. Sourced by run.sh and test.sh.
if ! command -v haproxy >/dev/null; then
    printf '\n==> system packages: haproxy\n'
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
fi
haproxy -v | head -n 1
