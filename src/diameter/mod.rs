//! Diameter base protocol (RFC 6733): sans-IO codec, dictionary, peer state
//! machine, and a TCP transport.
