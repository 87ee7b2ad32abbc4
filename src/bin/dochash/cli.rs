//! Command-line syntax. Help texts here are the user's reference: keep them true to the code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dochash::encoder::{DeviceSpec, Pooling, Precision};
use dochash::model::ModelSpec;

#[derive(Debug, Parser)]
#[command(
    name = "dochash",
    version,
    about = "Semantic search over your own documents",
    long_about = "Semantic search over your own documents.\n\n\
        dochash splits your notes into passages, encodes them with a BERT model, and answers \
        queries twice, by meaning (a filter over binary codes, then a cosine rerank) and by \
        word (BM25), and fuses the two. Everything runs locally. The interactive UI is `dochash-tui`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Model folder (config.json, tokenizer.json, model.safetensors; sentence-transformers
    /// pooling and prompts if present), Hugging Face name, or short name (`dochash model list`)
    #[arg(long, global = true, env = "DOCHASH_MODEL", value_name = "DIR|NAME")]
    pub model: Option<ModelSpec>,
    /// Compute device: auto, cpu, cuda[:N] or metal[:N]
    #[arg(long, global = true, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// Encoder arithmetic: f32, or int8 (about twice as fast on the CPU; vectors within 0.99
    /// cosine of f32's). Default: what the index was built with, else int8 on a CPU with an
    /// int8 SIMD kernel and f32 otherwise; changing it rebuilds the index. `dochash embed`
    /// writes f32 vectors unless int8 is asked for
    #[arg(
        long,
        global = true,
        env = "DOCHASH_PRECISION",
        value_name = "f32|int8"
    )]
    pub precision: Option<Precision>,
    /// Never use the network (only local folders and caches)
    #[arg(long, global = true)]
    pub offline: bool,
    /// Print only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More diagnostics on stderr (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download or locate the encoder model
    #[command(subcommand)]
    Model(ModelCmd),
    /// Encode text: one line of stdin in, one JSON array of floats out
    Embed(EmbedArgs),
    /// Add folders to the index and bring it up to date (only changed files are re-embedded)
    Index(IndexArgs),
    /// Search the index
    Query(QueryArgs),
    /// Show what is indexed, with which model, codes and fusion, and what training gained
    Status(StatusArgs),
    /// Keep the index up to date as files change, and answer queries from other terminals
    Watch(WatchArgs),
    /// Serve the index to agents and editors: a Model Context Protocol server on stdio
    /// (tools `search`, `read`, `status`)
    Mcp(McpArgs),
    /// Learn from the indexed notes: fine-tune the encoder (SimCSE) and/or learn the codes
    /// (ranking head or DHIM), build the next generation's index and switch to it (Ctrl-C keeps
    /// the serving one)
    Train(TrainArgs),
    /// Measurements for docs/BENCHMARKS.md (data sets are passed as paths); a tool for
    /// developers, left out of `--help`
    #[command(subcommand, hide = true)]
    Bench(BenchCmd),
    /// The papers' evaluation protocols on labelled data (passed as paths); a tool for
    /// developers, left out of `--help`
    #[command(subcommand, hide = true)]
    Eval(EvalCmd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimcseChoice {
    /// `full` on a GPU, `head` on a CPU (what background training does)
    Auto,
    /// Every weight (use with a GPU)
    Full,
    /// Only the top layers, over cached outputs of the frozen lower ones (CPU-friendly)
    Head,
    /// Keep the base encoder
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodesChoice {
    /// A ranking head over the pooled vectors, trained so the filter needs fewer candidates
    Ranked,
    /// The DHIM hashing head over the encoder's token states (the paper's)
    Dhim,
    /// Keep ITQ's training-free codes
    Itq,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// SimCSE fine-tuning of the encoder; it is only adopted if it answers known-item questions
    /// about held-back files of your notes (titles → sections, first sentences → the rest) at
    /// least as well as the base model
    #[arg(long, value_enum, default_value = "auto")]
    pub simcse: SimcseChoice,
    /// Learned codes: `ranked` replaces ITQ's only if the filter then needs at most 0.9× the
    /// candidates for recall@10 ≥ 0.99 on held-back passages; `dhim` only if it keeps nearest neighbours
    /// at least as well
    #[arg(long, value_enum, default_value = "ranked")]
    pub codes: CodesChoice,
    /// Same as --codes dhim
    #[arg(long, hide = true)]
    pub dhim: bool,
    /// Code length of the DHIM head [default: the index's current length; the ranking head
    /// always takes the index's]
    #[arg(long, value_name = "N")]
    pub bits: Option<usize>,
    /// Most steps of the ranking head (the one kept is the best checked every 50)
    #[arg(long, default_value_t = 600, value_name = "N")]
    pub code_steps: usize,
    /// Most epochs of the DHIM head (early stopping may end sooner)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub epochs: usize,
    /// Epochs of SimCSE
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub simcse_epochs: usize,
    /// What each passage learns to find in its batch: `sentence` (its body without one of its
    /// sentences ↔ that sentence), `dropout` (its own opening again, under another dropout mask,
    /// as in the paper), `crops:N` (two random crops, each a view long, of its first N tokens;
    /// head mode), `title` (its body ↔ its section's title, where the title shares a word with it) or
    /// `neighbour` (its body ↔ the next passage of its section) [default: sentence]
    #[arg(long, value_name = "KIND")]
    pub simcse_positives: Option<dochash::train::simcse::Positives>,
    #[command(flatten)]
    pub simcse_tuning: SimcseTuning,
    /// Switch to what was trained even if the checks on held-back passages say it is worse
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCmd {
    /// P@100 of binary codes on {"label","text"} JSONL: database = train, queries = test,
    /// relevant = same label; top 100 by Hamming distance, ties to the earlier document
    Hashing(Box<HashingArgs>),
    /// Spearman ×100 of cosine similarity against gold scores (STS-B TSV: score in column 5,
    /// sentences in 6 and 7)
    Sts(StsArgs),
    /// Known-item retrieval: hit@1, hit@10 and MRR@10 of lexical, semantic and fused search
    /// over a folder; a hit is a result in the query's file whose lines overlap its range
    Retrieval(RetrievalArgs),
    /// The adoption check `dochash train` applies to a fine-tuned encoder: known-item MRR@10
    /// (titles → sections, first sentences → the rest) on the passages training holds back, for
    /// --model (the base) and --tuned
    Adoption(AdoptionArgs),
    /// The text dochash reads from files (a PDF's text layer, a web page's visible text), as
    /// search, the preview and `read` see it: each file's lines (sanitised) on stdout, or with
    /// --out the text as read into DIR/NAME.txt, with the time each took
    Text(TextArgs),
}

#[derive(Debug, Args)]
pub struct TextArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Write each file's text to DIR/<its name without extension>.txt instead
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AdoptionArgs {
    /// The folder training read (its passages are held back as training holds them back)
    #[arg(long, value_name = "DIR")]
    pub docs: PathBuf,
    /// The fine-tuned model folder (e.g. <home>/generations/<n>/model)
    #[arg(long, value_name = "DIR")]
    pub tuned: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// The folder searched (indexed with the product's own update)
    #[arg(long, value_name = "DIR")]
    pub docs: PathBuf,
    /// TSV rows: query, file (relative to --docs), first line, last line (1-based)
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,
    /// Keep the index here between runs (default: a temporary folder)
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Search modes to measure, comma-separated
    #[arg(long, default_value = "lexical,semantic,hybrid", value_name = "M,...")]
    pub modes: String,
    /// Fusion for hybrid: corpus (the one the index fitted to the corpus's own questions, as
    /// searches use), rrf, rrf:K, convex:ALPHA or zscore:ALPHA (the default weight is zscore:0.4)
    #[arg(long, default_value = "corpus", value_name = "F")]
    pub fusion: String,
    /// Fit the fusion to the corpus's questions again, even where the kept index has a fit
    #[arg(long)]
    pub refit_fusion: bool,
    /// Passage size in tokens (default: the model's, at most 200)
    #[arg(long, value_name = "N")]
    pub passage_tokens: Option<usize>,
    /// Overlap between consecutive passages of a section, in tokens
    #[arg(long, value_name = "N")]
    pub overlap: Option<usize>,
    /// Do not embed the heading trail with each passage
    #[arg(long)]
    pub no_heading_embed: bool,
    /// Cut passages at every heading instead of packing across them (the product packs across)
    #[arg(long)]
    pub within_sections: bool,
    /// Semantic search matches half-overlapping windows of N tokens inside each longer passage
    /// and scores the passage by its best one; 0: one vector per passage (default: the
    /// product's)
    #[arg(long, value_name = "N")]
    pub unit_tokens: Option<usize>,
    /// Use only the first N queries
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print the first N queries each mode missed, with its top 3 results (on stderr)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub misses: usize,
    /// Also write each query's result to FILE, one TSV line per mode and query: mode, query
    /// number (1-based), rank of the first hit (0: not in the top 10). Two runs' files compare
    /// query by query (tests/benches/paired.py)
    #[arg(long, value_name = "FILE")]
    pub ranks: Option<PathBuf>,
    /// Also write every candidate each query scored to FILE, in ranked order, one TSV line each:
    /// mode, query number, position (1-based; 0 on the one line of a query with no candidate),
    /// 1 if it is the wanted passage, cosine, BM25 (empty where a side did not score it), the
    /// score it was ranked by. Other fusion rules can then be tried on the same candidates
    /// (tests/benches/fusion-rules.py). A query with a quoted phrase lists only the candidates
    /// holding it (all of them when none does), while its fusion was normalised over all
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,
    /// How results are grouped, as `dochash query --group`: place (the product's), file or
    /// none. A result counts as the wanted passage when it or a passage folded into it is
    #[arg(long, default_value = "place", value_name = "HOW")]
    pub group: dochash::index::search::Group,
    /// One JSON object per mode: mode, hit_at_1, hit_at_10, mrr_at_10, distinct_files_at_10,
    /// mrr_at_10_shown (a result counts only when the passage it shows holds the answer),
    /// queries
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HashingArgs {
    /// JSONL database (e.g. 20ng/train.jsonl); the learned methods train on it, without labels
    #[arg(long, value_name = "FILE")]
    pub train: PathBuf,
    /// JSONL queries (e.g. 20ng/test.jsonl)
    #[arg(long, value_name = "FILE")]
    pub test: PathBuf,
    /// Code lengths, comma-separated
    #[arg(long, default_value = "16,32,64,128", value_name = "BITS,...")]
    pub bits: String,
    /// Methods, comma-separated: cosine, lsh, median, itq, dhim, simcse+dhim
    #[arg(
        long,
        default_value = "cosine,lsh,median,itq,dhim,simcse+dhim",
        value_name = "M,..."
    )]
    pub methods: String,
    /// Precision of the top K
    #[arg(short = 'k', default_value_t = 100, value_name = "K")]
    pub k: usize,
    /// Tokens per document when encoding
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_len: usize,
    /// Use only the first N training documents
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Use only the first N test documents
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Use an evenly spaced sample of N training documents as the database (after encoding, so
    /// the cache is shared with full runs)
    #[arg(long, value_name = "N")]
    pub sample_train: Option<usize>,
    /// Folder caching token states between runs [default: eval-cache in the dochash home]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// DHIM: most epochs (early stopping may end sooner)
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// DHIM: sigmoid temperature
    #[arg(long, value_name = "X")]
    pub alpha: Option<f64>,
    /// DHIM: weight of the global-code/sentence-embedding term
    #[arg(long, value_name = "X")]
    pub beta: Option<f64>,
    /// DHIM: Adam learning rate
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    /// DHIM: filters per convolution window
    #[arg(long, value_name = "N")]
    pub filters: Option<usize>,
    /// DHIM: the β term's target, a learned code of the sentence embedding or its fixed ITQ code
    #[arg(long, value_name = "learned|itq")]
    pub sentence_code: Option<dochash::train::dhim::SentenceCode>,
    /// DHIM: starting weights, random or an ITQ hasher of the READOUT
    #[arg(long, value_name = "random|itq")]
    pub init: Option<dochash::train::dhim::HeadInit>,
    /// SimCSE: full (every weight) or head (top layers only)
    #[arg(long, value_name = "MODE")]
    pub simcse_mode: Option<dochash::train::simcse::Mode>,
    #[command(flatten)]
    pub simcse_tuning: SimcseTuning,
    /// One JSON object per line: method, bits (null for cosine), p_at_100
    #[arg(long)]
    pub json: bool,
}

/// SimCSE settings `train` and `eval hashing` share; unset ones keep the defaults.
#[derive(Debug, Args)]
pub struct SimcseTuning {
    /// Top layers SimCSE trains in head mode [default: 2]
    #[arg(long, value_name = "N")]
    pub simcse_layers: Option<usize>,
    /// SimCSE learning rate [default: 3e-5]
    #[arg(long, value_name = "LR")]
    pub simcse_lr: Option<f64>,
    /// Passages per SimCSE batch, each one's negatives the others [default: 32]
    #[arg(long, value_name = "N")]
    pub simcse_batch: Option<usize>,
    /// Tokens of each SimCSE view, `[CLS]` and `[SEP]` included, at most the model's positions
    /// [default: 64]
    #[arg(long, value_name = "N")]
    pub simcse_max_len: Option<usize>,
    /// Share of the trained weights in the tuned model, the rest the base model's (WiSE-FT
    /// weight averaging; 1 keeps the trained weights whole) [default: 1]
    #[arg(long, value_name = "W")]
    pub simcse_tuned_weight: Option<f64>,
    /// Also learn the questions the notes ask of themselves: a link's sentence ↔ the section it
    /// points to, a front matter title ↔ its note, a question heading ↔ its answer (on|off)
    /// [default: off]
    #[arg(long, value_name = "ON|OFF", value_parser = clap::builder::BoolishValueParser::new())]
    pub simcse_structure: Option<bool>,
}

impl SimcseTuning {
    pub fn apply(&self, cfg: &mut dochash::train::simcse::SimcseConfig) {
        if let Some(x) = self.simcse_layers {
            cfg.head_layers = x;
        }
        if let Some(x) = self.simcse_lr {
            cfg.lr = x;
        }
        if let Some(x) = self.simcse_batch {
            cfg.batch = x;
        }
        if let Some(x) = self.simcse_max_len {
            cfg.max_len = x;
        }
        if let Some(x) = self.simcse_tuned_weight {
            cfg.tuned_weight = x;
        }
        if let Some(x) = self.simcse_structure {
            cfg.structure = x;
        }
    }
}

#[derive(Debug, Args)]
pub struct StsArgs {
    /// STS-B TSV file (e.g. stsb/sts-dev.tsv)
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print {"spearman": …}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Recall@k of the code filter + rerank against exact cosine, on {"label","text"} JSONL; with
    /// --target, the candidates each coder and filter need to reach it
    Recall(RecallArgs),
    /// Code filter throughput, random codes (Hamming on one thread, or --weighted: split across
    /// cores from 262,144 codes, as queries scan; RAYON_NUM_THREADS=1 for one)
    Hamming(HammingArgs),
    /// Query latency of the product's own searcher over a synthetic index written through the
    /// real store (clustered vectors, synthetic words), excluding query encoding; cold open time
    /// and memory too
    Search(SearchBenchArgs),
    /// Time from saving a note to finding it, through the watcher, in a temporary folder
    Freshness(FreshnessArgs),
    /// Encoder throughput: tokens/s on random token ids of exactly BATCH × SEQ (no padding), or
    /// on real texts with --data
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Texts per forward pass
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per text
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Threads for the CPU backend (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed repetitions after one warm-up (the best is reported)
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Run candle's general tensor path instead of the fused CPU path (the baseline)
    #[arg(long)]
    pub candle: bool,
    /// Time `embed` on the texts of this {"label","text"} JSONL file instead (mixed lengths, cut
    /// at --seq tokens, batched by length, at most --batch per pass, pooled): counts real
    /// tokens, one timed pass after a warm-up on the first texts
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// With --data: use the first N texts
    #[arg(long, default_value_t = 2000)]
    pub limit: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FreshnessArgs {
    /// Notes already in the folder before measuring (copied from this folder, if given)
    #[arg(long, value_name = "DIR")]
    pub seed: Option<PathBuf>,
    /// Saves to time
    #[arg(long, default_value_t = 20)]
    pub saves: usize,
}

#[derive(Debug, Args)]
pub struct RecallArgs {
    /// JSONL whose texts form the indexed corpus (e.g. 20ng/train.jsonl)
    #[arg(long, value_name = "FILE")]
    pub corpus: PathBuf,
    /// JSONL whose texts are the queries (e.g. 20ng/test.jsonl)
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,
    /// Use only the first N queries
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit_queries: usize,
    /// Code lengths, comma-separated
    #[arg(long, default_value = "16,32,64,128", value_name = "BITS,...")]
    pub bits: String,
    /// Candidate counts, comma-separated (default: what `dochash query` uses)
    #[arg(long, value_name = "C,...")]
    pub candidates: Option<String>,
    /// With --units, on an index large enough to be partitioned into lists: the shares of its
    /// vectors the first stage scans, comma-separated (1 scans every code; default: what
    /// `dochash query` uses)
    #[arg(long, value_name = "S,...")]
    pub probe_shares: Option<String>,
    /// Recall of the top K
    #[arg(short = 'k', default_value_t = 10, value_name = "K")]
    pub k: usize,
    /// Tokens per text when encoding
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_len: usize,
    /// Folder to cache embeddings in between runs
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Instead of recall at given candidate counts, the fewest candidates at which recall@K
    /// reaches this target, per coder and filter (e.g. 0.99)
    #[arg(long, value_name = "RECALL")]
    pub target: Option<f64>,
    /// With --target: code sources, comma-separated: `itq` (training-free, fitted as an update
    /// fits it), `learned` (the ranking head `dochash train` trains, on the corpus's vectors:
    /// minutes) and `dhim` (the DHIM head `--codes dhim` trains, on the corpus's token states:
    /// minutes and ~1 GB per 10 k texts)
    #[arg(long, default_value = "itq", value_name = "C,...")]
    pub coders: String,
    /// With --target: filters, comma-separated: `weighted` (the query's margins against the
    /// codes, the product's) and `hamming` (plain Hamming distance)
    #[arg(long, default_value = "weighted,hamming", value_name = "F,...")]
    pub filters: String,
    /// Instead of one passage per corpus text, N passages made of its real sentences: each takes
    /// 2–6 sentences of one text in random order, and its vector is the normalised mean of
    /// theirs (every sentence encoded once): a million real-ish passages from a corpus a CPU can
    /// encode. With --target and the itq coder only
    #[arg(long, value_name = "N")]
    pub compose: Option<usize>,
    /// With --compose, without --target: each passage keeps its sentences as its units (one
    /// vector each, as indexing keeps a passage's 64-token units) and is searched through the
    /// product's searcher; recall@k against the exact best unit of every passage
    #[arg(long, requires = "compose")]
    pub units: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HammingArgs {
    /// Codes to scan
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    /// Code length
    #[arg(long, default_value_t = 64)]
    pub bits: usize,
    /// Candidates to keep
    #[arg(long, default_value_t = 1000)]
    pub candidates: usize,
    /// Repetitions (the best is reported)
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Time the weighted filter (the query's margins against the codes) instead
    #[arg(long)]
    pub weighted: bool,
    /// Time a plain read of the same codes instead, split across threads as the weighted scan
    /// is: what the memory allows any scan of them
    #[arg(long, conflicts_with = "weighted")]
    pub read: bool,
}

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    /// Passages in the synthetic index
    #[arg(long, default_value_t = 1_000_000)]
    pub passages: usize,
    /// Embedding dimension
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Vectors per passage: the units it is matched on (indexing real notes makes about 5 with
    /// the default 64-token units)
    #[arg(long, default_value_t = 1)]
    pub units: usize,
    /// Code length
    #[arg(long, default_value_t = 64)]
    pub bits: usize,
    /// Clusters the synthetic vectors are drawn around
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    /// Candidates for the rerank (default: what `dochash query` uses)
    #[arg(long)]
    pub candidates: Option<usize>,
    /// On an index large enough to be partitioned into lists: the share of its vectors the
    /// first stage scans (1 scans every code; default: what `dochash query` uses)
    #[arg(long, value_name = "SHARE")]
    pub probe_share: Option<f32>,
    /// Queries to time
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Of those, how many to check against brute-force cosine for recall@10
    #[arg(long, default_value_t = 20)]
    pub recall_queries: usize,
    /// Also time every mode under these filter words (`path:f00000[0-4]*` keeps the files
    /// whose names match; the synthetic files are f0000000.md, f0000001.md, … of 100
    /// passages each), with recall against brute force over the passages they keep
    #[arg(long, value_name = "WORDS")]
    pub filters: Option<String>,
    /// Build the index here and keep it (default: a temporary folder); an index already there
    /// with the same settings is reused, so cold opens can be timed on their own
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Search modes to time, comma-separated: semantic (filter + rerank) and hybrid (fused with
    /// BM25 over synthetic words)
    #[arg(long, default_value = "semantic,hybrid", value_name = "M,...")]
    pub modes: String,
    /// The first stage: weighted (the query's margins against the codes, the product's) or
    /// hamming
    #[arg(long, default_value = "weighted", value_name = "F")]
    pub filter: String,
    /// Map the vectors in on a background thread right after the open, as the running owner
    /// does with every index it serves; the queries start at once
    #[arg(long)]
    pub warm: bool,
    /// Map the vectors in as --warm does, but before the queries: what a running owner reaches
    /// once idle for a moment
    #[arg(long, conflicts_with = "warm")]
    pub warmed: bool,
    /// Time a second searcher, made once the first is warmed (--warmed) as an update makes a
    /// new one, warming in the background as the owner's does
    #[arg(long)]
    pub next_searcher: bool,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders (or files) to add; without any, the folders indexed before are updated
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Stop indexing a folder added before (its files leave the index)
    #[arg(long, value_name = "PATH")]
    pub forget: Vec<PathBuf>,
    /// Index only files whose path (relative to its folder) matches; repeatable; replaces the stored list
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files and folders matching; repeatable; replaces the stored list
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// File extensions to index, comma-separated (default: md,markdown,txt,text,org,rst,adoc,asciidoc,
    /// html,htm,pdf,docx,odt,epub)
    #[arg(long, value_delimiter = ',', value_name = "EXT,...")]
    pub extensions: Option<Vec<String>>,
    /// Skip files larger than this many bytes (default: 4194304)
    #[arg(long, value_name = "BYTES")]
    pub max_file_size: Option<u64>,
    /// Code length in bits: 16, 32, 64, 128 or 256; kept for later updates (default: 64, and 128
    /// from 250,000 vectors: about 50,000 passages)
    #[arg(long, value_name = "N", value_parser = parse_bits)]
    pub bits: Option<usize>,
    /// Texts per forward pass of the encoder
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch: usize,
}

fn parse_bits(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (16 | 32 | 64 | 128 | 256)) => Ok(n),
        _ => Err(format!("{s} is not one of 16, 32, 64, 128, 256")),
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// What to look for, in your own words
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    pub text: Vec<String>,
    /// Number of results (1 to 10,000)
    #[arg(short = 'k', long, default_value_t = 10, value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=dochash::index::search::MAX_K as u64))]
    pub k: usize,
    /// One JSON object per result and line: path, line, end_line, score, text, headings,
    /// matched_lines, snippet, more, …
    #[arg(long)]
    pub json: bool,
    /// How passages of one file fold into one result: place (neighbouring passages of a
    /// section are one result), file (one result per file) or none
    #[arg(long, default_value = "place", value_name = "HOW")]
    pub group: dochash::index::search::Group,
    /// The same as --group file
    #[arg(long, hide = true, conflicts_with = "group")]
    pub per_file: bool,
    /// Lines of the passage shown around each result's matched lines
    #[arg(short = 'C', long, default_value_t = 0, value_name = "N")]
    pub context: usize,
    /// Candidates the code filter passes to the cosine rerank (default: by index size)
    #[arg(short = 'c', long, value_name = "N")]
    pub candidates: Option<usize>,
    /// hybrid (words and meaning, fused), semantic (meaning only) or lexical (words only)
    #[arg(long, default_value = "hybrid", value_name = "MODE")]
    pub mode: dochash::index::search::Mode,
    #[command(flatten)]
    pub filters: FilterArgs,
}

/// Filters, as flags; each is also a word of the query (`path:work`, `-tag:draft`, …).
#[derive(Debug, Args, Default)]
#[command(
    next_help_heading = "Filters (also as words of the query: path:DIR, -path:DIR, ext:md, tag:NAME, in:FOLDER, after:DATE, before:DATE)"
)]
pub struct FilterArgs {
    /// Only files at or under this folder or file (absolute, or relative to an indexed folder),
    /// or matching this glob (`*.md` tests names, `work/**` paths from the indexed folder)
    #[arg(long, value_name = "DIR|GLOB")]
    pub path: Vec<String>,
    /// Leave out files at or under this folder or file, or matching this glob
    #[arg(long, value_name = "DIR|GLOB")]
    pub not_path: Vec<String>,
    /// Only files with this extension
    #[arg(long, value_name = "EXT")]
    pub ext: Vec<String>,
    /// Only notes with this tag (front matter or #tag); several must all hold
    #[arg(long, value_name = "NAME")]
    pub tag: Vec<String>,
    /// Leave out notes with this tag
    #[arg(long, value_name = "NAME")]
    pub not_tag: Vec<String>,
    /// Only this indexed folder (by name or path)
    #[arg(long = "in", value_name = "FOLDER")]
    pub within: Vec<String>,
    /// Only notes dated on or after (front matter date, else modification time):
    /// YYYY-MM-DD, YYYY-MM, YYYY, today, yesterday, 7d, 2w, 3m, 1y
    #[arg(long, value_name = "DATE")]
    pub after: Option<String>,
    /// Only notes dated before (same forms as --after)
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
}

impl FilterArgs {
    /// The flags as filters, each checked as its query word would be.
    pub fn filters(&self) -> Result<dochash::index::Filters, dochash::index::IndexError> {
        let mut f = dochash::index::Filters::default();
        for (key, vals, negated) in [
            ("path", &self.path, false),
            ("path", &self.not_path, true),
            ("ext", &self.ext, false),
            ("tag", &self.tag, false),
            ("tag", &self.not_tag, true),
            ("in", &self.within, false),
        ] {
            for v in vals {
                f.add(key, v, negated)?;
            }
        }
        for (key, v) in [("after", &self.after), ("before", &self.before)] {
            if let Some(v) = v {
                f.add(key, v, false)?;
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folders to add before watching; without any, the folders indexed before are watched
    #[arg(value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    /// Do not retrain in the background when the notes have drifted
    #[arg(long)]
    pub no_train: bool,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Serve the index to agents and editors: a Model Context Protocol server on \
        stdin/stdout, with the tools `search`, `read` and `status`.\n\n\
        When no other dochash owns the index, this one does: it watches the indexed folders and \
        trains in the background as `dochash watch` does. Otherwise it asks the owner, and \
        takes over when that one quits. Configure a host with \
        {\"command\": \"dochash\", \"args\": [\"mcp\"]}."
)]
pub struct McpArgs {
    /// Folders to add to the index; without any, the folders indexed before are served
    #[arg(value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    /// Do not retrain in the background when the notes have drifted
    #[arg(long)]
    pub no_train: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Make a model available locally (default: sentence-transformers/all-MiniLM-L6-v2)
    Fetch {
        /// Hugging Face name or local folder
        name: Option<String>,
    },
    /// Print the folder a model is loaded from, without downloading
    Path {
        /// Hugging Face name or local folder
        name: Option<String>,
    },
    /// The models dochash knows by short name (`--model bge-small`), with their prompts
    List,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// How token states become one vector: mean, cls or max [default: the model's own, from
    /// 1_Pooling/config.json, else mean]
    #[arg(long)]
    pub pool: Option<Pooling>,
    /// Scale every vector to unit length (models with a Normalize module always are)
    #[arg(long)]
    pub normalize: bool,
    /// Maximum tokens per line, [CLS]/[SEP] included (default: the model's own limit)
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// Read from this file instead of stdin
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}
