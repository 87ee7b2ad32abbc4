//! Which compute device runs the encoder. `auto` prefers a GPU backend that was compiled in and
//! actually opens, and falls back to the CPU, so one binary works on machines with and without GPUs.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::EncoderError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let ordinal = |rest: &str| -> Result<usize, String> {
            if rest.is_empty() {
                Ok(0)
            } else {
                rest.strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad device {s:?}: expected e.g. cuda:0"))
            }
        };
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            _ if s.starts_with("cuda") => Ok(Self::Cuda(ordinal(&s[4..])?)),
            _ if s.starts_with("metal") => Ok(Self::Metal(ordinal(&s[5..])?)),
            _ => Err(format!(
                "unknown device {s:?}: use auto, cpu, cuda[:N] or metal[:N]"
            )),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// Opens the device; the returned label names what was really used (e.g. `cpu` after an `auto`
/// that found no GPU) so the user can see it.
pub fn open(spec: DeviceSpec) -> Result<(Device, String), EncoderError> {
    match spec {
        DeviceSpec::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceSpec::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(EncoderError::Device(
                    "this dochash was built without CUDA: rebuild with `--features cuda`, or use --device cpu".into(),
                ));
            }
            Device::new_cuda(n)
                .map(|d| (d, format!("cuda:{n}")))
                .map_err(|e| {
                    EncoderError::Device(format!("cannot open cuda:{n}: {}", first_line(&e)))
                })
        }
        DeviceSpec::Metal(n) => {
            if !candle_core::utils::metal_is_available() {
                return Err(EncoderError::Device(
                    "this dochash was built without Metal: rebuild with `--features metal`, or use --device cpu".into(),
                ));
            }
            Device::new_metal(n)
                .map(|d| (d, format!("metal:{n}")))
                .map_err(|e| {
                    EncoderError::Device(format!("cannot open metal:{n}: {}", first_line(&e)))
                })
        }
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available()
                && let Ok(d) = Device::new_cuda(0)
            {
                return Ok((d, "cuda:0".into()));
            }
            if candle_core::utils::metal_is_available()
                && let Ok(d) = Device::new_metal(0)
            {
                return Ok((d, "metal:0".into()));
            }
            Ok((Device::Cpu, "cpu".into()))
        }
    }
}

/// candle's errors can carry a multi-line backtrace; the user gets the one line that says why.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!("CPU".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:2".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(2)));
        assert_eq!("metal".parse::<DeviceSpec>(), Ok(DeviceSpec::Metal(0)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        for s in ["auto", "cpu", "cuda:1", "metal:0"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn auto_always_opens_something() {
        let (_, label) = open(DeviceSpec::Auto).unwrap();
        assert!(["cpu", "cuda:0", "metal:0"].contains(&label.as_str()));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_says_how_to_fix() {
        let err = open(DeviceSpec::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
