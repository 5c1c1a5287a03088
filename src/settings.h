/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The delq.* configuration parameters.
 *
 * src/settings.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_SETTINGS_H
#define DELQ_SETTINGS_H

extern char *delq_database;
extern char *delq_worker_role;
extern int	delq_default_deadline_s;
extern int	delq_hold_period_s;
extern bool delq_require_approval;
extern int	delq_retry_base_ms;
extern int	delq_retry_max_s;
extern int	delq_max_attempts;
extern int	delq_batch_size;
extern int	delq_max_in_flight;
extern int	delq_idle_timeout_ms;
extern int	delq_breaker_threshold;
extern int	delq_breaker_cooldown_s;
extern int	delq_breaker_max_cooldown_s;
extern int	delq_secret_overlap_s;
extern char *delq_ca_file;
extern char *delq_tls_dir;
extern char *delq_http_proxy;
extern char *delq_denied_networks;
extern int	delq_warn_before_s;
extern int	delq_subject_retention_s;
extern char *delq_redact_attributes;
extern char *delq_http_listen;
extern char *delq_http_tls_cert;
extern char *delq_http_tls_key;
extern char *delq_http_public_url;
extern int	delq_http_max_body;
extern int	delq_http_max_connections;
extern int	delq_http_max_client_connections;
extern int	delq_http_request_timeout_ms;

extern void delq_define_settings(void);

#endif							/* DELQ_SETTINGS_H */
