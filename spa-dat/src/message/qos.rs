//! [`QualityOfService`], the delivery guarantee every message carries. At the crate root.

use serde::{Deserialize, Serialize};

/// MQTT-style delivery guarantee carried in every message (`QualityOfService` on the wire).
///
/// # Examples
///
/// ```
/// use spa_dat::{QualityOfService, SpaMessage};
///
/// let message = SpaMessage::new("metrics", "cpu=0.4").with_qos(QualityOfService::AtMostOnce);
/// assert_eq!(u8::from(message.quality_of_service), 0);
/// assert_eq!(QualityOfService::try_from(2), Ok(QualityOfService::ExactlyOnce));
/// assert!(QualityOfService::try_from(3).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum QualityOfService {
    /// 0: fire and forget.
    AtMostOnce,
    /// 1: delivered at least once, possibly more.
    AtLeastOnce,
    /// 2: delivered exactly once (the Python package's default).
    #[default]
    ExactlyOnce,
}

impl From<QualityOfService> for u8 {
    fn from(qos: QualityOfService) -> u8 {
        match qos {
            QualityOfService::AtMostOnce => 0,
            QualityOfService::AtLeastOnce => 1,
            QualityOfService::ExactlyOnce => 2,
        }
    }
}

impl TryFrom<u8> for QualityOfService {
    type Error = String;
    fn try_from(value: u8) -> std::result::Result<Self, String> {
        match value {
            0 => Ok(QualityOfService::AtMostOnce),
            1 => Ok(QualityOfService::AtLeastOnce),
            2 => Ok(QualityOfService::ExactlyOnce),
            other => Err(format!("QualityOfService must be 0, 1 or 2, got {other}")),
        }
    }
}
