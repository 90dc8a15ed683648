//! A fault-injecting mock LLM provider (being written).
