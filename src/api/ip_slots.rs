//! Places bounded in total and per client (an IPv4 address, or an IPv6
//! /64): the API's
//! connections ([`super::server`]) and its event streams
//! ([`super::events`]) each take one, so that a single client can hold at
//! most its share, never all of them.
//!
//! Owns only the counting. Must not decide what a refusal means (the
//! caller closes a connection or answers 503) nor do I/O.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every place is taken.
    Global,
    /// This client address holds its share already.
    PerIp,
}

impl Refused {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Global => "global",
            Refused::PerIp => "per_ip",
        }
    }
}

/// Up to `total` places, at most `per_ip` of them for one client address.
#[derive(Debug)]
pub(crate) struct IpSlots {
    total: usize,
    per_ip: usize,
    /// Places taken in all, and by address. An address is in the map only
    /// while it holds a place, so the map never has more than `total`
    /// entries.
    taken: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A place, given back when dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    slots: Arc<IpSlots>,
    /// `None` for a caller without a client address (the router driven
    /// in-process), which counts towards the total only.
    ip: Option<IpAddr>,
}

impl IpSlots {
    /// `per_ip` is at most `total` (a larger share could never be used).
    pub(crate) fn new(total: usize, per_ip: usize) -> Arc<IpSlots> {
        Arc::new(IpSlots {
            total,
            per_ip: per_ip.min(total),
            taken: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a place for `ip`, if both bounds allow it.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<IpSlot, Refused> {
        // A panic while counting cannot leave the counts half-updated
        // (each update is one statement), so a poisoned lock is usable.
        let mut guard = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let (taken, by_ip) = &mut *guard;
        if *taken >= self.total {
            return Err(Refused::Global);
        }
        let ip = ip.map(client_key);
        if let Some(ip) = ip {
            let held = by_ip.entry(ip).or_insert(0);
            if *held >= self.per_ip {
                return Err(Refused::PerIp);
            }
            *held += 1;
        }
        *taken += 1;
        Ok(IpSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    /// Places taken now.
    pub(crate) fn taken(&self) -> usize {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

/// What one client is: its IPv4 address (also when it comes IPv4-mapped
/// over IPv6), or its IPv6 /64, since a single IPv6 host commonly holds a
/// whole /64 and could otherwise take a share per address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut guard = self
            .slots
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (taken, by_ip) = &mut *guard;
        *taken -= 1;
        if let Some(ip) = self.ip
            && let Some(held) = by_ip.get_mut(&ip)
        {
            *held -= 1;
            if *held == 0 {
                by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let slots = IpSlots::new(10, 2);
        let _held = [slots.try_acquire(ip(2)), slots.try_acquire(ip(2))];
        assert_eq!(slots.try_acquire(ip(2)).err(), Some(Refused::PerIp));
        assert!(slots.try_acquire(ip(3)).is_ok());
    }

    #[test]
    fn the_total_bounds_every_address_together() {
        let slots = IpSlots::new(2, 2);
        let _held = [slots.try_acquire(ip(2)), slots.try_acquire(ip(3))];
        assert_eq!(slots.try_acquire(ip(4)).err(), Some(Refused::Global));
        assert_eq!(slots.try_acquire(None).err(), Some(Refused::Global));
    }

    #[test]
    fn a_dropped_place_is_free_again_and_forgotten() {
        let slots = IpSlots::new(4, 1);
        let held = slots.try_acquire(ip(2)).expect("a place");
        drop(held);
        assert_eq!(slots.taken(), 0);
        assert!(slots.taken.lock().expect("lock").1.is_empty());
        assert!(slots.try_acquire(ip(2)).is_ok());
    }

    #[test]
    fn every_address_of_one_ipv6_64_counts_as_one_client() {
        let slots = IpSlots::new(10, 1);
        let first = slots.try_acquire(Some("2001:db8:1:2::1".parse().expect("ip")));
        assert!(first.is_ok());
        let same_64 = slots.try_acquire(Some("2001:db8:1:2:ffff::9".parse().expect("ip")));
        assert_eq!(same_64.err(), Some(Refused::PerIp));
        assert!(
            slots
                .try_acquire(Some("2001:db8:1:3::1".parse().expect("ip")))
                .is_ok()
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_client() {
        let slots = IpSlots::new(10, 1);
        let _v4 = slots.try_acquire(ip(2));
        let mapped = slots.try_acquire(Some("::ffff:127.0.0.2".parse().expect("ip")));
        assert_eq!(mapped.err(), Some(Refused::PerIp));
    }

    #[test]
    fn a_caller_without_an_address_counts_towards_the_total_only() {
        let slots = IpSlots::new(3, 1);
        let _held = [slots.try_acquire(None), slots.try_acquire(None)];
        let another = slots.try_acquire(ip(2));
        assert!(another.is_ok());
        assert_eq!(slots.try_acquire(None).err(), Some(Refused::Global));
    }
}
