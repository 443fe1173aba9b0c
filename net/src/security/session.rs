//! One connection's security state: the listener it came in on and who the client is.
//! Owned by the connection (`kafka::conn`) and handed to every request's dispatch; only
//! that connection's tasks, on its shard, touch it.

use std::cell::RefCell;
use std::rc::Rc;

use super::SecurityProtocol;

/// Kafka's principal for a client that has not authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

#[derive(Debug)]
pub(crate) struct Session {
    /// Index into `Security::listeners`.
    pub listener: usize,
    pub protocol: SecurityProtocol,
    /// `User:<name>`: from the client certificate on an SSL listener, else ANONYMOUS.
    principal: RefCell<Rc<str>>,
}

impl Session {
    pub fn new(listener: usize, protocol: SecurityProtocol, principal: Option<String>) -> Self {
        Session {
            listener,
            protocol,
            principal: RefCell::new(principal.map_or_else(|| Rc::from(ANONYMOUS), Rc::from)),
        }
    }

    /// The client's principal as Kafka writes it (`User:CN=carol`, `User:ANONYMOUS`).
    pub fn principal(&self) -> Rc<str> {
        self.principal.borrow().clone()
    }
}
