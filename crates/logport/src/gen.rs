//! `logport gen`: realistic synthetic events for any slice, for demos, tests and
//! benchmarks.
//!
//! Values follow each field's catalog type and, where the name says what it is, a
//! plausible distribution: country codes weighted like real traffic, a few dozen
//! campaigns with a long tail (Zipf-like), device and OS mixes, log-normal costs and
//! payouts, IPs, user agents, bot and unique flags at realistic rates. Ids link across
//! slices: a click id is a pure function of `(seed, click index)`, so conversions
//! generated with the same seed name clicks that exist, and postbacks name
//! conversions that exist (`--parent-rows` says how many parents there are). The
//! output is deterministic for a given seed.

use std::io::Write;

use anyhow::Context;
use logport_catalog::{time, Catalog, ColumnType, Field, Slice, TypeFamily};
use serde_json::{Map, Value};

/// Arguments of `logport gen`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Slice to generate (see `logport catalog`).
    #[arg(long)]
    pub slice: String,
    /// Number of events.
    #[arg(long, default_value_t = 1000)]
    pub rows: u64,
    /// Seed: the same seed gives the same events and linked ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day of event times (YYYY-MM-DD, UTC).
    #[arg(long, default_value = "2026-11-01")]
    pub start: String,
    /// Number of days the events spread over.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// How many parent events ids refer to (clicks for conversions, conversions for
    /// postbacks); default: 20× rows for conversions, rows for postbacks.
    #[arg(long)]
    pub parent_rows: Option<u64>,
    /// App ids are drawn from 1..=apps.
    #[arg(long, default_value_t = 3)]
    pub apps: u64,
    /// `ndjson` or `csv` (with a header row).
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Only these fields (comma-separated; required fields are always written).
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// Load slices from this directory instead of the built-in catalog.
    #[arg(long, env = "LOGPORT_SCHEMA_DIR")]
    pub schema_dir: Option<std::path::PathBuf>,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let catalog = match &args.schema_dir {
        Some(dir) => Catalog::load_dir(dir),
        None => Catalog::builtin(),
    }
    .context("the catalog is invalid")?;
    let slice = catalog
        .slice(&args.slice)
        .with_context(|| format!("unknown slice `{}`", args.slice))?;
    let start = time::parse_date(&args.start).map_err(anyhow::Error::msg)?;
    let csv = match args.format.as_str() {
        "ndjson" | "jsonl" => false,
        "csv" => true,
        other => anyhow::bail!("--format must be ndjson or csv, not `{other}`"),
    };
    anyhow::ensure!(args.days >= 1, "--days must be at least 1");
    anyhow::ensure!(args.apps >= 1, "--apps must be at least 1");
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let generator = Generator {
        slice,
        seed: args.seed,
        start: start
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp()),
        span: i64::from(args.days) * 86_400,
        apps: args.apps,
        parents: args.parent_rows.unwrap_or(match slice.name.as_str() {
            "conversions" => args.rows.saturating_mul(20).max(1),
            _ => args.rows.max(1),
        }),
    };
    for f in &args.fields {
        anyhow::ensure!(
            slice.field(f).is_some() && f != "received_time",
            "`{f}` is not a field of slice `{}` that can be sent",
            slice.name
        );
    }
    let names: Vec<&Field> = slice
        .fields
        .iter()
        .filter(|f| f.name != "received_time")
        .filter(|f| args.fields.is_empty() || f.required || args.fields.contains(&f.name))
        .collect();
    if csv {
        let header: Vec<&str> = names.iter().map(|f| f.name.as_str()).collect();
        writeln!(out, "{}", header.join(","))?;
    }
    let mut line = String::with_capacity(2048);
    for i in 0..args.rows {
        let mut row = generator.row(i);
        if !args.fields.is_empty() {
            row.retain(|k, _| names.iter().any(|f| &f.name == k));
        }
        if csv {
            line.clear();
            for (j, f) in names.iter().enumerate() {
                if j > 0 {
                    line.push(',');
                }
                match row.get(&f.name) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => csv_quote(s, &mut line),
                    Some(other) => line.push_str(&other.to_string()),
                }
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        } else {
            serde_json::to_writer(&mut out, &row)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn csv_quote(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

struct Generator<'a> {
    slice: &'a Slice,
    seed: u64,
    start: i64,
    span: i64,
    apps: u64,
    parents: u64,
}

/// SplitMix64: tiny, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64, i: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.rotate_left(17));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Index in 0..n with a long tail: small indexes are much more likely.
    fn zipf(&mut self, n: u64) -> u64 {
        let u = self.unit().max(1e-12);
        (((n as f64 + 1.0).powf(u) - 1.0).floor() as u64).min(n.saturating_sub(1))
    }

    fn pick<'a>(&mut self, weighted: &'a [(&'a str, u32)]) -> &'a str {
        let total: u32 = weighted.iter().map(|(_, w)| w).sum();
        let mut x = self.below(u64::from(total)) as u32;
        for (v, w) in weighted {
            if x < *w {
                return v;
            }
            x -= w;
        }
        weighted[0].0
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box–Muller for a standard normal.
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
}

const COUNTRIES: &[(&str, u32)] = &[
    ("US", 30),
    ("DE", 8),
    ("GB", 7),
    ("FR", 6),
    ("BR", 6),
    ("IN", 9),
    ("ID", 4),
    ("MX", 4),
    ("CA", 3),
    ("JP", 3),
    ("ES", 3),
    ("IT", 3),
    ("RU", 3),
    ("TR", 2),
    ("PL", 2),
    ("NL", 2),
    ("AU", 2),
    ("VN", 2),
    ("TH", 2),
    ("PH", 2),
];
const CITIES: &[(&str, u32)] = &[
    ("New York", 5),
    ("Los Angeles", 4),
    ("Berlin", 3),
    ("London", 4),
    ("Paris", 3),
    ("São Paulo", 3),
    ("Mumbai", 3),
    ("Jakarta", 2),
    ("Mexico City", 2),
    ("Toronto", 2),
    ("Tokyo", 2),
    ("Madrid", 2),
    ("Milan", 1),
    ("Warsaw", 1),
    ("Amsterdam", 1),
];
const OS: &[(&str, u32)] = &[
    ("Android", 55),
    ("iOS", 30),
    ("Windows", 10),
    ("macOS", 4),
    ("Linux", 1),
];
const BROWSERS: &[(&str, u32)] = &[
    ("Chrome", 60),
    ("Safari", 25),
    ("Samsung Internet", 6),
    ("Firefox", 4),
    ("Edge", 4),
    ("Opera", 1),
];
const BRANDS: &[(&str, u32)] = &[
    ("Samsung", 30),
    ("Apple", 30),
    ("Xiaomi", 15),
    ("Oppo", 7),
    ("Vivo", 6),
    ("Huawei", 6),
    ("Google", 3),
    ("OnePlus", 3),
];
const ISPS: &[(&str, u32)] = &[
    ("Verizon", 6),
    ("AT&T", 5),
    ("T-Mobile", 5),
    ("Vodafone", 5),
    ("Deutsche Telekom", 3),
    ("Orange", 3),
    ("Jio", 5),
    ("Airtel", 3),
    ("Claro", 3),
    ("Comcast", 4),
    ("Telkomsel", 2),
];
const LANGUAGES: &[(&str, u32)] = &[
    ("en", 50),
    ("es", 10),
    ("pt", 8),
    ("de", 7),
    ("fr", 6),
    ("hi", 5),
    ("id", 4),
    ("ja", 3),
    ("ru", 3),
];
const CURRENCIES: &[(&str, u32)] = &[("USD", 80), ("EUR", 15), ("GBP", 5)];
const USER_AGENTS: &[(&str, u32)] = &[
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", 30),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", 28),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 12),
    ("Mozilla/5.0 (Linux; Android 13; 2201117TY) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Mobile Safari/537.36", 10),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", 5),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 1),
];
const EVENTS: &[(&str, u32)] = &[
    ("app_open", 30),
    ("screen_view", 25),
    ("level_complete", 8),
    ("add_to_cart", 6),
    ("purchase", 3),
    ("tutorial_complete", 5),
    ("share", 2),
    ("login", 10),
    ("search", 8),
    ("rate_app", 1),
];
const SOURCES: &[(&str, u32)] = &[
    ("Facebook", 30),
    ("Google Ads", 25),
    ("TikTok", 15),
    ("PropellerAds", 8),
    ("Taboola", 6),
    ("Outbrain", 5),
    ("Bing", 5),
    ("Snapchat", 4),
    ("Unity Ads", 2),
];

impl Generator<'_> {
    /// A linked id: the same (kind, index) always gives the same 24-hex id.
    fn id(&self, kind: u64, index: u64) -> String {
        let a = Rng::new(self.seed, kind, index).next();
        let b = Rng::new(self.seed, kind ^ 0xabcdef, index).next();
        format!("{:016x}{:08x}", a, b >> 32)
    }

    fn row(&self, i: u64) -> Map<String, Value> {
        let mut r = Rng::new(self.seed, 7, i);
        // Event times: uniform over the days, denser in the local afternoon.
        let day = r.below((self.span / 86_400) as u64) as i64;
        let hour_weights: [u32; 24] = [
            2, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 7, 7, 7, 8, 8, 9, 9, 9, 8, 6, 4, 3,
        ];
        let mut h = r.below(hour_weights.iter().map(|w| u64::from(*w)).sum()) as u32;
        let mut hour = 0;
        for (k, w) in hour_weights.iter().enumerate() {
            if h < *w {
                hour = k as i64;
                break;
            }
            h -= w;
        }
        let event_time = self.start + day * 86_400 + hour * 3600 + r.below(3600) as i64;
        let country = r.pick(COUNTRIES);
        let os = r.pick(OS);
        let campaign = r.zipf(40);
        let mut row = Map::new();
        for f in &self.slice.fields {
            let v = self.value(f, i, event_time, country, os, campaign, &mut r);
            if !v.is_null() || f.ty.is_nullable() {
                row.insert(f.name.clone(), v);
            }
        }
        row.remove("received_time");
        row
    }

    #[allow(clippy::too_many_arguments)]
    fn value(
        &self,
        f: &Field,
        i: u64,
        event_time: i64,
        country: &str,
        os: &str,
        campaign: u64,
        r: &mut Rng,
    ) -> Value {
        let name = f.name.as_str();
        if f.ty.is_nullable() && !name.ends_with("_id") && r.chance(0.3) {
            return Value::Null;
        }
        let slice = self.slice.name.as_str();
        let text = |s: String| Value::String(s);
        match name {
            "event_time" => return text(time::format_timestamp(event_time)),
            "app_id" => return Value::from(1 + r.zipf(self.apps)),
            "event_id" => {
                let stream = self
                    .slice
                    .name
                    .bytes()
                    .fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                return text(uuid_from(self.seed, stream, i));
            }
            _ => {}
        }
        // Ids: own ids from the row index; references from the parent slice's space.
        let own = |kind: &str| match (slice, kind) {
            ("clicks", "click_id")
            | ("conversions", "conversion_id")
            | ("postbacks", "postback_id") => true,
            (_, k) => k == format!("{}_id", slice.trim_end_matches('s')),
        };
        if name == "click_id" && slice != "clicks" {
            return text(self.id(1, r.below(self.parents)));
        }
        if name == "conversion_id" && slice == "postbacks" {
            return text(self.id(2, r.below(self.parents)));
        }
        if own(name) {
            let kind = match name {
                "click_id" => 1,
                "conversion_id" => 2,
                _ => 3,
            };
            return text(self.id(kind, i));
        }
        if f.ty.family() != TypeFamily::Text {
            return self.typed(f, name, event_time, r);
        }
        if name.ends_with("campaign_id") {
            return text(format!("cmp-{campaign:03}"));
        }
        if name.ends_with("campaign_name") {
            return text(format!(
                "Campaign {campaign:03} – {}",
                ["Summer", "Retarget", "Launch", "Evergreen"][campaign as usize % 4]
            ));
        }
        if name.ends_with("traffic_source_id") {
            return text(format!("ts-{:02}", r.zipf(SOURCES.len() as u64)));
        }
        if name.contains("traffic_source") || name == "source" || name == "publisher_name" {
            return text(r.pick(SOURCES).to_string());
        }
        if name.starts_with("country") {
            return text(country.to_string());
        }
        if name == "city" {
            return text(r.pick(CITIES).to_string());
        }
        if name == "region" {
            return text(format!("{country}-{:02}", r.below(12)));
        }
        if name == "isp" || name == "carrier" || name == "operator_name" {
            return text(r.pick(ISPS).to_string());
        }
        if name == "os" || name == "os_family" {
            return text(os.to_string());
        }
        if name.ends_with("os_version") {
            return text(format!("{}.{}", 10 + r.below(8), r.below(4)));
        }
        if name == "browser" {
            return text(r.pick(BROWSERS).to_string());
        }
        if name.ends_with("version") && f.ty.family() == TypeFamily::Text {
            return text(format!("{}.{}.{}", r.below(130), r.below(10), r.below(100)));
        }
        if name.contains("brand") || name.contains("manufacturer") {
            return text(r.pick(BRANDS).to_string());
        }
        if name.contains("model") {
            return text(format!(
                "{}-{}{}",
                r.pick(BRANDS),
                ["S", "A", "X", "Pro"][r.below(4) as usize],
                10 + r.below(15)
            ));
        }
        if name.contains("language") || name.contains("locale") {
            return text(r.pick(LANGUAGES).to_string());
        }
        if name == "currency" || name.ends_with("_currency") {
            return text(r.pick(CURRENCIES).to_string());
        }
        if name.contains("user_agent") {
            return text(r.pick(USER_AGENTS).to_string());
        }
        if name == "event_name" {
            return text(r.pick(EVENTS).to_string());
        }
        if name == "ip" || name.ends_with("_ip") || name.contains("ipv6") {
            let ip = format!(
                "{}.{}.{}.{}",
                1 + r.below(223),
                r.below(256),
                r.below(256),
                1 + r.below(254)
            );
            return text(if name.contains("ipv6") {
                format!("::ffff:{ip}")
            } else {
                ip
            });
        }
        if name.contains("url") || name == "referrer" {
            let host = [
                "news.example.com",
                "blog.example.org",
                "shop.example.net",
                "play.example.io",
            ][r.below(4) as usize];
            return text(format!(
                "https://{host}/p/{}?utm_campaign=cmp-{campaign:03}&sub1={}",
                r.below(10_000),
                r.below(100)
            ));
        }
        if name.starts_with("sub") && name[3..].chars().all(|c| c.is_ascii_digit()) {
            return if r.chance(0.4) {
                text(String::new())
            } else {
                text(format!("{}", r.zipf(500)))
            };
        }
        self.typed(f, name, event_time, r)
    }

    /// A value from the field's type alone (names refine numbers and flags).
    fn typed(&self, f: &Field, name: &str, event_time: i64, r: &mut Rng) -> Value {
        let text = Value::String;
        match f.ty.base() {
            ColumnType::Enum8(variants) => {
                // Mostly a real value; "unknown" (the first) sometimes.
                let k = if variants.len() > 1 && !r.chance(0.05) {
                    1 + r.zipf(variants.len() as u64 - 1) as usize
                } else {
                    0
                };
                text(variants[k].0.clone())
            }
            ColumnType::UInt8 => {
                let p = if name.contains("bot") || name.contains("proxy") || name.contains("error")
                {
                    0.04
                } else if name.contains("unique") {
                    0.7
                } else {
                    0.25
                };
                Value::from(u8::from(r.chance(p)))
            }
            ColumnType::Float32 | ColumnType::Float64 => {
                let median = if name.contains("cost") || name.contains("cpc") {
                    0.08
                } else if name.contains("payout")
                    || name.contains("revenue")
                    || name.contains("price")
                    || name.contains("value")
                {
                    4.0
                } else {
                    1.0
                };
                Value::from((r.lognormal(median, 0.9) * 10_000.0).round() / 10_000.0)
            }
            ColumnType::DateTime => {
                let t = (event_time + r.below(3600) as i64).min(time::MAX_DATETIME);
                text(time::format_timestamp(t))
            }
            ColumnType::Date => text(time::days_to_date(event_time.div_euclid(86_400)).to_string()),
            ColumnType::Uuid => text(uuid_from(self.seed, 13, r.next())),
            t if t.family() == TypeFamily::Unsigned || t.family() == TypeFamily::Signed => {
                let (_, hi) = t.int_range().unwrap_or((0, 0));
                let v = if name.contains("status") || name.contains("code") {
                    [200, 200, 200, 204, 400, 404, 500][r.below(7) as usize]
                } else if name.contains("ms") || name.contains("latency") || name.contains("time") {
                    r.lognormal(120.0, 0.8) as i128
                } else {
                    r.zipf(1000) as i128
                };
                Value::from(v.min(hi) as i64)
            }
            _ if f.ty.base() == &ColumnType::LowCardinalityString => {
                text(format!("{}_{}", name, r.zipf(30)))
            }
            _ => {
                if name.ends_with("_id") {
                    text(format!("{}", r.zipf(5000)))
                } else if name.contains("json")
                    || name.contains("payload")
                    || name.contains("changes")
                    || name.contains("params")
                {
                    text(format!(
                        "{{\"k\":{},\"v\":\"x{}\"}}",
                        r.below(100),
                        r.below(1000)
                    ))
                } else {
                    text(format!("{} {}", name.replace('_', " "), r.zipf(200)))
                }
            }
        }
    }
}

fn uuid_from(seed: u64, stream: u64, i: u64) -> String {
    let mut r = Rng::new(seed, stream, i);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&r.next().to_be_bytes());
    b[8..].copy_from_slice(&r.next().to_be_bytes());
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_catalog::ingest::{parse_line, RowContext};

    /// Every slice's generated rows pass ingest validation.
    #[test]
    fn generated_rows_are_valid_for_every_slice() {
        let catalog = Catalog::builtin().unwrap();
        for slice in catalog.slices() {
            let g = Generator {
                slice,
                seed: 42,
                start: 1_793_491_200,
                span: 7 * 86_400,
                apps: 3,
                parents: 100,
            };
            for i in 0..200 {
                let row = g.row(i);
                let line = serde_json::to_vec(&row).unwrap();
                let ctx = RowContext {
                    received_time: 1,
                    id_seed: None,
                };
                if let Err(e) = parse_line(slice, &line, &ctx, 1) {
                    panic!("{}: {e:?}: {}", slice.name, String::from_utf8_lossy(&line));
                }
            }
        }
    }

    #[test]
    fn ids_link_across_slices_and_output_is_deterministic() {
        let catalog = Catalog::builtin().unwrap();
        let gen = |name: &str, parents: u64| Generator {
            slice: catalog.slice(name).unwrap(),
            seed: 7,
            start: 1_793_491_200,
            span: 86_400,
            apps: 1,
            parents,
        };
        let clicks: std::collections::HashSet<String> = (0..50)
            .map(|i| {
                gen("clicks", 50).row(i)["click_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(clicks.len(), 50, "click ids are distinct");
        for i in 0..100 {
            let conv = gen("conversions", 50).row(i);
            assert!(clicks.contains(conv["click_id"].as_str().unwrap()));
        }
        assert_eq!(gen("clicks", 50).row(3), gen("clicks", 50).row(3));
    }
}
