//! What locksmithd does now (pure): the strategy from update.conf, the reboot window and the
//! update state in, one action out.

use super::window::Window;
use crate::conf::RebootStrategy;

/// The strategy in effect; `best-effort` resolves to etcd-lock when etcd is configured (as
/// locksmith did) and to reboot otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    Reboot,
    EtcdLock,
    Off,
}

pub fn resolve(s: RebootStrategy, etcd_configured: bool) -> Effective {
    match s {
        RebootStrategy::Reboot => Effective::Reboot,
        RebootStrategy::EtcdLock => Effective::EtcdLock,
        RebootStrategy::BestEffort if etcd_configured => Effective::EtcdLock,
        RebootStrategy::BestEffort => Effective::Reboot,
        RebootStrategy::Off => Effective::Off,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Idle,
    /// Outside the reboot window: look again in this many seconds.
    WaitWindow(u64),
    /// Take the reboot lock, then reboot.
    Lock,
    Reboot,
}

pub fn decide(
    strategy: Effective,
    need_reboot: bool,
    window: Option<&Window>,
    now: u64,
    holding: bool,
) -> Action {
    if !need_reboot || strategy == Effective::Off {
        return Action::Idle;
    }
    if let Some(w) = window {
        let wait = w.wait(now);
        if wait > 0 {
            return Action::WaitWindow(wait);
        }
    }
    match strategy {
        Effective::EtcdLock if !holding => Action::Lock,
        _ => Action::Reboot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        assert_eq!(
            resolve(RebootStrategy::BestEffort, true),
            Effective::EtcdLock
        );
        assert_eq!(
            resolve(RebootStrategy::BestEffort, false),
            Effective::Reboot
        );
        assert_eq!(resolve(RebootStrategy::Off, true), Effective::Off);
        let w = Window::parse(Some("04:00"), Some("1h")).unwrap().unwrap();
        let in_w = 4 * 3600 + 10;
        let out_w = 6 * 3600;
        assert_eq!(
            decide(Effective::Reboot, false, None, 0, false),
            Action::Idle
        );
        assert_eq!(decide(Effective::Off, true, None, 0, false), Action::Idle);
        assert_eq!(
            decide(Effective::Reboot, true, None, 0, false),
            Action::Reboot
        );
        assert_eq!(
            decide(Effective::Reboot, true, Some(&w), out_w, false),
            Action::WaitWindow(22 * 3600)
        );
        assert_eq!(
            decide(Effective::Reboot, true, Some(&w), in_w, false),
            Action::Reboot
        );
        assert_eq!(
            decide(Effective::EtcdLock, true, Some(&w), in_w, false),
            Action::Lock
        );
        assert_eq!(
            decide(Effective::EtcdLock, true, Some(&w), in_w, true),
            Action::Reboot
        );
        assert_eq!(
            decide(Effective::EtcdLock, true, Some(&w), out_w, true),
            Action::WaitWindow(22 * 3600)
        );
    }
}
