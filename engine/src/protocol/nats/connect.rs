//! `CONNECT` options (JSON from the client) and `INFO` (JSON from the server).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::NatsError;

/// What a client asks for in `CONNECT`. Unknown fields are ignored (clients send
/// `lang`, `version`, `protocol`, `tls_required`, ...); a field of the wrong type is an
/// error. Defaults are nats-server's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// Answer every command with `+OK`.
    pub verbose: bool,
    /// Stricter checks (accepted; ringbroker always validates subjects).
    pub pedantic: bool,
    /// Deliver the connection's own publishes to its own subscriptions.
    pub echo: bool,
    /// The client understands `HMSG` (else headers are stripped from its messages).
    pub headers: bool,
    /// A request with no subscriber answers at once with a 503 status (needs `headers`).
    pub no_responders: bool,
    /// Token authentication.
    pub auth_token: Option<String>,
    /// User of user/password authentication.
    pub user: Option<String>,
    /// Password of user/password authentication.
    pub pass: Option<String>,
    /// The client's name (for logs).
    pub name: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            verbose: false,
            pedantic: false,
            echo: true,
            headers: false,
            no_responders: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
        }
    }
}

impl ConnectOptions {
    /// Parses `CONNECT`'s JSON argument.
    pub fn decode(json: &Bytes) -> Result<Self, NatsError> {
        serde_json::from_slice(json).map_err(|e| NatsError::BadConnect(e.to_string()))
    }
}

/// What the server tells a client in `INFO` when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// A unique id of this server (process).
    pub server_id: String,
    /// The server's name.
    pub server_name: String,
    /// The nats-server version whose client protocol this matches; clients gate
    /// features (headers, no-responders) on it.
    pub version: String,
    /// Protocol level 1: the client may use async INFO and echo control.
    pub proto: u8,
    /// Where the server listens.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `HPUB`/`HMSG` are supported.
    pub headers: bool,
    /// `CONNECT` must carry credentials.
    pub auth_required: bool,
    /// The largest payload (headers included) the server accepts.
    pub max_payload: u32,
    /// This connection's id.
    pub client_id: u64,
}

impl ServerInfo {
    /// The JSON object `INFO` carries.
    pub fn to_json(&self) -> String {
        // Strings, numbers and booleans only: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}
