//! COCOON transport.
