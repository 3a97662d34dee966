//! SIP message layer: zero-copy parsing into borrowed views and an allocation-free rewriter.
