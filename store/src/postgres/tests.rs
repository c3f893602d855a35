//! Tests of the PostgreSQL backend (filled in below).
