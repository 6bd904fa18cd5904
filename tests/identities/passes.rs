//! (attacks of this family are added here)
