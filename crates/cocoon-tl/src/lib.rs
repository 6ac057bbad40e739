//! COCOON TL types.
