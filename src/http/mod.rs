//! HTTP classification (being written).
