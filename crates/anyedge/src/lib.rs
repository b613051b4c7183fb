//! The anyedge daemon as a library: every part of a PoP (configuration,
//! load balancer, DNS server, announcer, admin API...) and [`pop::Pop`],
//! their one owner. The `anyedge` binary (`main.rs`) is the command line
//! and the signals around it; tests drive a [`pop::Pop`] in-process.
//! See README.md and ARCHITECTURE.md.

pub mod accesslog;
pub mod admin;
pub mod announce;
pub mod config;
pub mod counters;
pub mod ctl;
pub mod demo;
pub mod dns;
pub mod dnscompare;
pub mod dnskeys;
pub mod fdlimit;
pub mod forward;
pub mod health;
pub mod hist;
pub mod history;
pub mod lab;
pub mod lb;
pub mod logutil;
pub mod net;
pub mod node;
pub mod notify;
pub mod pop;
pub mod process;
pub mod promtext;
pub mod status;
pub mod sysctl;
pub mod tunnel;
pub mod upgrade;
pub mod xdp;
