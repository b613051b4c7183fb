//! Backend selection and health state for the anyedge L4 balancer, without
//! I/O: the daemon passes backends, counters and `now` in and gets decisions
//! back.
//!
//! - [`maglev`]: Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//! - [`select`]: weighted round robin and weighted least-connections.
//! - [`health`]: the rise/fall state machine fed by active checks and by
//!   passive signals from real traffic.
//! - [`pool`]: a service's backend set from its sources (file, DNS, watched
//!   file, runtime changes), discovered-set checks, slow start.
#![forbid(unsafe_code)]

pub mod health;
pub mod maglev;
pub mod pool;
pub mod select;
