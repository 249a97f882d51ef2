//! The pieces of `top`'s terminal view: a pure UI state model (`state`), a pure drawing
//! function (`render`) with snapshot tests, and the terminal itself (`terminal`). The command
//! that drives them is `cmd::top`.

pub mod render;
pub mod state;
pub mod terminal;
#[cfg(test)]
mod tests;
