//! Record batch codec (format version 1): see docs/storage.md for the byte layout.
//! Being written; this placeholder keeps the module tree compiling.
