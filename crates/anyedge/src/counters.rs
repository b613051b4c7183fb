//! Counter sets declared once. Each counter of the data path is a relaxed
//! atomic in a struct declared with [`counter_set!`], which also names, in
//! the same line, where the counter appears in the status JSON and in
//! `/metrics`; the status read model (`status.rs`) renders every counter
//! of the table (JSON, metrics, the SIGUSR1 report), so a new counter is
//! one line here plus the place that counts it.

use std::sync::atomic::AtomicU64;

/// One counter of a set `S`.
pub struct CounterDef<S: 'static> {
    /// Its key in the status JSON; "group.key" nests it in an object.
    pub json: &'static str,
    /// The Prometheus family it is a sample of ...
    pub metric: &'static str,
    /// ... and the label that tells it apart within the family, if any.
    pub label: Option<(&'static str, &'static str)>,
    pub get: fn(&S) -> &AtomicU64,
}

/// Declares a struct of `AtomicU64` counters and its `COUNTERS` table:
/// `field: "json.key" => "metric_family" [label = value],`.
#[macro_export]
macro_rules! counter_set {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $( $(#[doc = $doc:literal])* $field:ident: $json:literal => $metric:literal $([$lk:literal = $lv:literal])?, )*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: ::std::sync::atomic::AtomicU64, )*
        }
        impl $name {
            /// Every counter of the set, in declaration order.
            pub const COUNTERS: &'static [$crate::counters::CounterDef<$name>] = &[
                $( $crate::counters::CounterDef {
                    json: $json,
                    metric: $metric,
                    label: $crate::counter_set!(@label $($lk, $lv)?),
                    get: {
                        fn get(s: &$name) -> &::std::sync::atomic::AtomicU64 {
                            &s.$field
                        }
                        get
                    },
                }, )*
            ];

            /// The counters' values now, in `COUNTERS` order.
            pub fn values(&self) -> Vec<u64> {
                Self::COUNTERS
                    .iter()
                    .map(|c| (c.get)(self).load(::std::sync::atomic::Ordering::Relaxed))
                    .collect()
            }
        }
    };
    (@label) => { None };
    (@label $k:literal, $v:literal) => { Some(($k, $v)) };
}
