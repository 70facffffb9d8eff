//! df
