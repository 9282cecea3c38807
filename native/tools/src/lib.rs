//! gatewaylab-tools: the native mock upstream and load generator.
