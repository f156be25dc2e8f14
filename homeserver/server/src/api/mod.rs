//! The APIs Plexus serves, as thin handlers over the services: each reads a request, calls
//! the domain services, and answers. Nothing below this layer imports it.

pub mod appservice;
pub mod client;
pub mod e2ee;
pub mod federation;
pub mod media;
pub mod push;
