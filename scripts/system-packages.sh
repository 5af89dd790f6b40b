#!/usr/bin/env bash
# Installs the system packages Aqueduct runs and is tested with (HAProxy;
# with `with_browser=1`, as test.sh sets it, also Chromium and its WebDriver
# for the dashboard's browser tests; with `with_netns=1`, as test.sh sets it
# too, iproute2 and nftables for the partition tests' network namespaces),
# with apt, when they are missing. Sourced by run.sh and test.sh.
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
if [ "${with_netns:-0}" = 1 ]; then
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nft >/dev/null || missing+=(nftables)
fi
if [ "${with_browser:-0}" = 1 ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    printf '\n==> system packages: %s\n' "${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
haproxy -v | head -n 1
