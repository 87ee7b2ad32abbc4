//! `dochash embed`: one text per input line, one JSON array per output line.
//!
//! Lines are read as bytes so that invalid UTF-8 is reported with its line number instead of a
//! generic decoding error. An empty line is embedded as the empty text ([CLS] [SEP]), so output
//! line N always belongs to input line N. Lines longer than the model's limit are cut to it,
//! with a warning naming them. The arithmetic is f32 unless `--precision int8` is given.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use dochash::encoder::BatchLimits;

use crate::cli::{EmbedArgs, Global};
use crate::shared;

/// Lines encoded per forward round: big enough for length bucketing to pay, small enough that
/// output starts streaming quickly on a long input.
const CHUNK: usize = 256;

pub fn run(g: &Global, args: &EmbedArgs) -> Result<ExitCode> {
    let files = shared::resolve_model(g)?;
    // The model's own vectors unless int8 is asked for: people feed these to other tools, and
    // parity with sentence-transformers is what they count on.
    let precision = g.precision.unwrap_or(dochash::encoder::Precision::F32);
    let enc = shared::load_encoder_with(g, &files, args.max_len, false, Some(precision))?;
    let (input, name): (Box<dyn Read>, String) = match &args.input {
        Some(p) => (
            Box::new(
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "stdin".into()),
    };
    let mut reader = BufReader::new(input);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut lines: Vec<String> = Vec::with_capacity(CHUNK);
    let mut first_line = 1usize;
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {name}"))?;
        if n > 0 {
            line_no += 1;
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            match String::from_utf8(std::mem::take(&mut buf)) {
                Ok(s) => lines.push(s),
                Err(_) => bail!(
                    "{name} line {line_no} is not valid UTF-8; convert the input first (e.g. `iconv -f latin1 -t utf-8`)"
                ),
            }
        }
        if lines.len() == CHUNK || (n == 0 && !lines.is_empty()) {
            let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
            let e = enc
                .embed(
                    &texts,
                    args.pool.unwrap_or(enc.profile().pooling),
                    args.normalize || enc.profile().normalize,
                    BatchLimits::default(),
                )
                .context("encoding failed")?;
            for i in &e.truncated {
                tracing::warn!(
                    "{name} line {} is longer than the model's limit of {} tokens; only its beginning was embedded",
                    first_line + i,
                    enc.max_len()
                );
            }
            for i in 0..e.len() {
                serde_json::to_writer(&mut out, e.row(i))?;
                out.write_all(b"\n")?;
            }
            out.flush().context("cannot write to stdout")?;
            first_line += lines.len();
            lines.clear();
        }
        if n == 0 {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
