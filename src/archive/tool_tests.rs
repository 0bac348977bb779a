//! Checks against real tools (skopeo): filled in below.
