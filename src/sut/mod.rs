//! The embedded reference CPM server: the default SUT.
