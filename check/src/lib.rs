//! The regression harness of `sessionwire`: everything that reads files or a
//! clock on the codec's behalf, kept out of the sans-IO codec.
//!
//! - [`corpus`]: the decode targets, corpus directories and the
//!   `expected.tsv` records that pin their verdicts;
//! - [`scenario`]: the scenario file format, in which a regression case drives
//!   sessions through a [`Registry`](sessionwire::session::Registry), and its
//!   runner;
//! - [`closes`]: the `# closes REASON` comments of scenario files, checked
//!   against what the scenario does;
//! - [`fuzz_targets`]: the fuzz targets, from their one list
//!   (`fuzz/targets.txt`);
//! - [`mqtt`]: MQTT client streams as `check` reads and reports them;
//! - [`mqtt_scenario`]: MQTT scenario files (`protocol mqtt`), run by
//!   [`scenario::run`] through the MQTT session registry.
//!
//! The dependency goes one way: [`corpus`] runs scenarios through
//! [`scenario`], which knows nothing of corpus files.
#![warn(missing_docs)]

pub mod closes;
pub mod corpus;
pub mod fuzz_targets;
pub mod mqtt;
pub mod mqtt_scenario;
pub mod scenario;
