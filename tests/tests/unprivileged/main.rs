//! What needs no privilege: properties of the compiler and the reference classifier over random
//! configs, and the config and classifier fuzz corpora replayed.

mod corpus;
mod properties;
