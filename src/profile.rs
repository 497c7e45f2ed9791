//! SUT profile: what the harness knows of the SUT, from YAML.
