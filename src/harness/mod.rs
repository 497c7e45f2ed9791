//! The cucumber World, steps by domain, expectations and verdicts.
