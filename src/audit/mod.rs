//! Audit: judging existing objects (files or a live cluster) and reporting every violation.
