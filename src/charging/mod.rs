//! CH-1 (offline) charging as typed requests and responses, the Rf mapping,
//! the Charging Enabler the harness plays, and the charging client of the
//! reference SUT.
