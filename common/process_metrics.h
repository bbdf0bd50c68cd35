/*
 * process_metrics — what every Prometheus exporter says about its process, and which build it is.
 *
 * Contract:
 *  - process_metrics_register(service) registers, once per process: process_cpu_seconds_total
 *    (counter), process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 *    process_max_fds and process_start_time_seconds (gauges), each read from /proc/self at every
 *    scrape (metrics_sampled()); and chatflow_build_info{service,version,revision} = 1, with the
 *    version and revision the Makefile compiled in ("unknown" when built outside a git checkout).
 *  - Linux only: a figure /proc cannot give renders NaN, never a made-up value.
 */
#ifndef CHATFLOW_PROCESS_METRICS_H
#define CHATFLOW_PROCESS_METRICS_H

void process_metrics_register(const char *service);

#endif
