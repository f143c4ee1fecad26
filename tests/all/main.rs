//! Every end-to-end test, in one binary: each starts a real host on a
//! scratch services and data folder, with real components built from source,
//! and talks HTTP to it. The host runs in the test's own process (the same
//! `App` and server, on a runtime of its own) unless the test is about the
//! process: signals, crashes, restarts, its log, its metrics, its memory,
//! its command line; then it is a `switchyard` process. `in_process` drives
//! the routes without a socket. One module per area; `support` holds what
//! they share.

mod support;

mod authoring;
mod cli;
mod cluster;
mod dashboard;
mod hardening;
mod in_process;
mod kinds;
mod languages;
mod limits;
mod loading;
mod openapi;
mod operations;
mod publishing;
mod shop;
mod storage;
mod swap;
mod traces;
mod wasi_http;

/// For every component the tests build, the test that puts it through its
/// paces. A component added to `test-artifacts` without a line here fails
/// the build (see `foreach_component!` below).
mod exercised_by {
    pub(crate) use crate::hardening::a_service_importing_what_it_exports_is_refused_for_that_reason as self_import;
    pub(crate) use crate::kinds::a_handler2_service_reads_its_lent_request_part_by_part as hello2;
    pub(crate) use crate::kinds::an_interface_only_service_is_imported_swapped_and_refuses_http_with_a_reason as tax;
    pub(crate) use crate::kinds::an_interface_only_service_is_imported_swapped_and_refuses_http_with_a_reason as till;
    pub(crate) use crate::languages::python_and_javascript_errors_reach_the_operators_and_console_logs as failing_py;
    pub(crate) use crate::languages::python_and_javascript_errors_reach_the_operators_and_console_logs as failing_js;
    pub(crate) use crate::languages::python_and_javascript_services_call_the_catalog_and_keep_data as reviews;
    pub(crate) use crate::languages::python_and_javascript_services_call_the_catalog_and_keep_data as wishlist;
    pub(crate) use crate::languages::python_and_javascript_services_call_the_catalog_and_keep_data as wishlist_async;
    pub(crate) use crate::limits::a_cycle_of_service_calls_ends_at_the_depth_limit as cycle;
    pub(crate) use crate::limits::a_cycle_of_service_calls_ends_at_the_depth_limit as pong;
    pub(crate) use crate::limits::limits_stop_loops_hoarders_and_overflows_and_the_host_stays_healthy as faulty;
    pub(crate) use crate::limits::orders_keep_being_accepted_after_a_panicking_goods_fails_over as goods_panic;
    pub(crate) use crate::loading::plain_exports_a_toolchain_leaves_are_no_service_interface as toolchain_export;
    pub(crate) use crate::shop::shop_flow_walks_every_order_transition as goods;
    pub(crate) use crate::shop::shop_flow_walks_every_order_transition as users;
    pub(crate) use crate::shop::shop_flow_walks_every_order_transition as orders;
    pub(crate) use crate::storage::a_service_cannot_read_or_overwrite_another_services_keys as kv_probe;
    pub(crate) use crate::swap::a_traffic_split_sends_each_version_its_share as goods_v2;
    pub(crate) use crate::swap::bad_components_are_refused_with_a_reason_while_the_old_version_serves as goods_broken;
    pub(crate) use crate::wasi_http::a_component_built_for_other_hosts_runs_unchanged as hello_http;
    pub(crate) use crate::wasi_http::a_wasi_http_service_streams_a_gib_each_way_in_bounded_memory as streamer;
}

macro_rules! exercised {
    ($component:ident) => {
        const _: () = {
            #[allow(unused_imports)]
            use crate::exercised_by::$component as _;
        };
    };
}

test_artifacts::foreach_component!(exercised);
