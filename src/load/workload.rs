//! What the load generator sends: the method mix, the keys drawn from a
//! registry extract (uniformly or Zipf-skewed) and the requests built from
//! them with one fixed `AccessContext` and optional `read_mask`.

use std::{
    collections::HashSet,
    fmt,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    policy::{self, MethodSpec},
    proto::{
        business::v1::GetEnterpriseRequest,
        citizen::v1::{GetCitizenRequest, VerifyCitizenRequest},
        common::v1::{AccessContext, Date},
        land::v1::{GetParcelRequest, ListParcelsByHolderRequest, ParcelRef},
    },
};

/// The methods `load` can drive, with the short names used on the command line.
pub const LOAD_METHODS: &[(&str, MethodSpec)] = &[
    ("GetCitizen", policy::GET_CITIZEN),
    ("VerifyCitizen", policy::VERIFY_CITIZEN),
    ("GetParcel", policy::GET_PARCEL),
    ("ListParcelsByHolder", policy::LIST_PARCELS_BY_HOLDER),
    ("GetEnterprise", policy::GET_ENTERPRISE),
];

/// One method of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    GetCitizen,
    VerifyCitizen,
    GetParcel,
    ListParcelsByHolder,
    GetEnterprise,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::GetCitizen,
        Op::VerifyCitizen,
        Op::GetParcel,
        Op::ListParcelsByHolder,
        Op::GetEnterprise,
    ];

    pub fn name(self) -> &'static str {
        LOAD_METHODS[self as usize].0
    }

    pub fn spec(self) -> MethodSpec {
        LOAD_METHODS[self as usize].1
    }

    /// Parses a short (`GetCitizen`) or full
    /// (`interop.citizen.v1.CitizenRegistryService/GetCitizen`) method name.
    pub fn parse(text: &str) -> Result<Op, String> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == text || op.spec().name == text)
            .ok_or_else(|| {
                let known: Vec<&str> = LOAD_METHODS.iter().map(|(n, _)| *n).collect();
                format!("unknown method {text:?}; one of: {}", known.join(", "))
            })
    }

    /// The extract file this method draws its keys from.
    fn source(self) -> Source {
        match self {
            Op::GetCitizen | Op::VerifyCitizen => Source::Citizens,
            Op::GetParcel | Op::ListParcelsByHolder => Source::Parcels,
            Op::GetEnterprise => Source::Enterprises,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A weighted mix of methods.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<(Op, u32)>,
    total: u64,
}

impl Mix {
    /// Parses `GetCitizen=6,GetParcel=3,ListParcelsByHolder=1` (`:` works
    /// as well as `=`; a method without a weight counts 1).
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut entries: Vec<(Op, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once(['=', ':']) {
                Some((n, w)) => {
                    let w: u32 = w.trim().parse().map_err(|_| {
                        format!("{part:?}: the weight must be a whole number 1 to 1000000")
                    })?;
                    (n.trim(), w)
                }
                None => (part, 1),
            };
            if !(1..=1_000_000).contains(&weight) {
                return Err(format!(
                    "{part:?}: the weight must be a whole number 1 to 1000000"
                ));
            }
            let op = Op::parse(name)?;
            if entries.iter().any(|(o, _)| *o == op) {
                return Err(format!("{name} appears twice in the mix"));
            }
            entries.push((op, weight));
        }
        if entries.is_empty() {
            return Err("the mix names no method".into());
        }
        Ok(Mix::from_entries(entries))
    }

    pub fn single(op: Op) -> Mix {
        Mix::from_entries(vec![(op, 1)])
    }

    fn from_entries(entries: Vec<(Op, u32)>) -> Mix {
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        Mix { entries, total }
    }

    pub fn entries(&self) -> &[(Op, u32)] {
        &self.entries
    }

    /// The method for a uniform draw `r`.
    pub fn pick(&self, r: u64) -> Op {
        let mut x = r % self.total;
        for (op, w) in &self.entries {
            if x < u64::from(*w) {
                return *op;
            }
            x -= u64::from(*w);
        }
        self.entries[0].0
    }
}

/// `GetCitizen=6,GetParcel=3`, as `--mix` takes it.
impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (op, w)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}={w}")?;
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (SplitMix64); load generation needs
/// speed and repeatability, not cryptographic quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); `n` > 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Rank `k` (1-based, in extract order) drawn with probability
    /// proportional to `1 / k^s`.
    Zipf(f64),
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipf(s) => write!(f, "zipf(s={s})"),
        }
    }
}

/// Draws indexes into a key list of fixed length.
#[derive(Clone, Debug)]
pub enum Sampler {
    Uniform(usize),
    /// Cumulative weights, normalised to end at 1.
    Zipf(Vec<f64>),
}

impl Sampler {
    pub fn new(n: usize, distribution: Distribution) -> Sampler {
        match distribution {
            Distribution::Uniform => Sampler::Uniform(n),
            Distribution::Zipf(s) => {
                let mut cdf = Vec::with_capacity(n);
                let mut sum = 0.0;
                for k in 1..=n {
                    sum += (k as f64).powf(-s);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                Sampler::Zipf(cdf)
            }
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            Sampler::Uniform(n) => rng.below(*n),
            Sampler::Zipf(cdf) => {
                let u = rng.next_f64();
                cdf.partition_point(|c| *c <= u).min(cdf.len() - 1)
            }
        }
    }
}

/// A citizen as `load` needs it: the key, and what VerifyCitizen declares.
#[derive(Clone, Debug)]
pub struct CitizenKey {
    pub personal_id: String,
    pub full_name: String,
    pub date_of_birth: Option<Date>,
}

/// Keys read from a registry extract.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub citizens: Vec<CitizenKey>,
    pub parcels: Vec<ParcelRef>,
    /// Distinct holders of the parcels, in order of first appearance.
    pub holders: Vec<String>,
    pub enterprises: Vec<String>,
}

/// Where the extract files are.
#[derive(Clone, Debug)]
pub struct ExtractFiles {
    pub citizens: PathBuf,
    pub parcels: PathBuf,
    pub enterprises: PathBuf,
}

impl ExtractFiles {
    /// The file names `demo-data` writes, in `dir`.
    pub fn in_dir(dir: &Path) -> ExtractFiles {
        ExtractFiles {
            citizens: dir.join("citizens.jsonl"),
            parcels: dir.join("parcels.jsonl"),
            enterprises: dir.join("enterprises.jsonl"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    Citizens,
    Parcels,
    Enterprises,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CitizenLine {
    #[serde(alias = "personal_id")]
    personal_id: String,
    #[serde(default, alias = "full_name")]
    full_name: String,
    #[serde(default, alias = "date_of_birth")]
    date_of_birth: Option<DateLine>,
}

#[derive(Deserialize)]
struct DateLine {
    #[serde(default)]
    year: i32,
    #[serde(default)]
    month: i32,
    #[serde(default)]
    day: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefLine {
    #[serde(alias = "commune_code")]
    commune_code: String,
    #[serde(alias = "map_sheet")]
    map_sheet: u32,
    #[serde(alias = "parcel_number")]
    parcel_number: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HolderLine {
    #[serde(alias = "holder_id")]
    holder_id: String,
}

#[derive(Deserialize)]
struct ParcelLine {
    #[serde(rename = "ref")]
    parcel_ref: RefLine,
    #[serde(default)]
    holders: Vec<HolderLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnterpriseLine {
    #[serde(alias = "enterprise_code")]
    enterprise_code: String,
}

/// Reads every line of `path` as `T`; blank lines are skipped. Errors name
/// the file and line.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(T),
) -> Result<usize, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut count = 0;
    for (i, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: T = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        each(value);
        count += 1;
    }
    Ok(count)
}

impl Keys {
    /// Reads the keys the mix needs, and only those files.
    pub fn load(files: &ExtractFiles, mix: &Mix) -> Result<Keys, String> {
        let needed: HashSet<Source> = mix.entries().iter().map(|(op, _)| op.source()).collect();
        let mut keys = Keys::default();
        if needed.contains(&Source::Citizens) {
            read_lines(&files.citizens, |c: CitizenLine| {
                keys.citizens.push(CitizenKey {
                    personal_id: c.personal_id,
                    full_name: c.full_name,
                    date_of_birth: c.date_of_birth.map(|d| Date {
                        year: d.year,
                        month: d.month,
                        day: d.day,
                    }),
                })
            })?;
            if keys.citizens.is_empty() {
                return Err(format!("{}: no citizens", files.citizens.display()));
            }
        }
        if needed.contains(&Source::Parcels) {
            let mut seen = HashSet::new();
            read_lines(&files.parcels, |p: ParcelLine| {
                for h in p.holders {
                    if seen.insert(h.holder_id.clone()) {
                        keys.holders.push(h.holder_id);
                    }
                }
                keys.parcels.push(ParcelRef {
                    commune_code: p.parcel_ref.commune_code,
                    map_sheet: p.parcel_ref.map_sheet,
                    parcel_number: p.parcel_ref.parcel_number,
                });
            })?;
            if keys.parcels.is_empty() {
                return Err(format!("{}: no parcels", files.parcels.display()));
            }
            if keys.holders.is_empty()
                && mix
                    .entries()
                    .iter()
                    .any(|(op, _)| *op == Op::ListParcelsByHolder)
            {
                return Err(format!(
                    "{}: no parcel names a holder, so ListParcelsByHolder has no keys",
                    files.parcels.display()
                ));
            }
        }
        if needed.contains(&Source::Enterprises) {
            read_lines(&files.enterprises, |e: EnterpriseLine| {
                keys.enterprises.push(e.enterprise_code)
            })?;
            if keys.enterprises.is_empty() {
                return Err(format!("{}: no enterprises", files.enterprises.display()));
            }
        }
        Ok(keys)
    }
}

/// A request ready to send.
#[derive(Clone, Debug)]
pub enum Call {
    GetCitizen(GetCitizenRequest),
    VerifyCitizen(VerifyCitizenRequest),
    GetParcel(GetParcelRequest),
    ListParcelsByHolder(ListParcelsByHolderRequest),
    GetEnterprise(GetEnterpriseRequest),
}

/// Everything needed to build requests: mix, keys, samplers, context, mask.
#[derive(Debug)]
pub struct Workload {
    pub mix: Mix,
    pub keys: Keys,
    pub context: AccessContext,
    pub read_mask: Option<pbjson_types::FieldMask>,
    pub distribution: Distribution,
    citizens: Sampler,
    parcels: Sampler,
    holders: Sampler,
    enterprises: Sampler,
}

impl Workload {
    pub fn new(
        mix: Mix,
        keys: Keys,
        distribution: Distribution,
        context: AccessContext,
        read_mask: Option<pbjson_types::FieldMask>,
    ) -> Workload {
        Workload {
            citizens: Sampler::new(keys.citizens.len(), distribution),
            parcels: Sampler::new(keys.parcels.len(), distribution),
            holders: Sampler::new(keys.holders.len(), distribution),
            enterprises: Sampler::new(keys.enterprises.len(), distribution),
            mix,
            keys,
            context,
            read_mask,
            distribution,
        }
    }

    /// Draws the next request.
    pub fn next(&self, rng: &mut Rng) -> Call {
        let context = Some(self.context.clone());
        let read_mask = self.read_mask.clone();
        match self.mix.pick(rng.next_u64()) {
            Op::GetCitizen => Call::GetCitizen(GetCitizenRequest {
                context,
                personal_id: self.keys.citizens[self.citizens.sample(rng)]
                    .personal_id
                    .clone(),
                read_mask,
            }),
            Op::VerifyCitizen => {
                let c = &self.keys.citizens[self.citizens.sample(rng)];
                Call::VerifyCitizen(VerifyCitizenRequest {
                    context,
                    personal_id: c.personal_id.clone(),
                    full_name: c.full_name.clone(),
                    date_of_birth: c.date_of_birth,
                })
            }
            Op::GetParcel => Call::GetParcel(GetParcelRequest {
                context,
                parcel: Some(self.keys.parcels[self.parcels.sample(rng)].clone()),
                read_mask,
            }),
            Op::ListParcelsByHolder => Call::ListParcelsByHolder(ListParcelsByHolderRequest {
                context,
                holder_id: self.keys.holders[self.holders.sample(rng)].clone(),
                page_size: 0,
                page_token: String::new(),
                read_mask,
            }),
            Op::GetEnterprise => Call::GetEnterprise(GetEnterpriseRequest {
                context,
                enterprise_code: self.keys.enterprises[self.enterprises.sample(rng)].clone(),
                read_mask,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_weights_and_rejects_nonsense() {
        let m = Mix::parse("GetCitizen=6, GetParcel:3,ListParcelsByHolder").unwrap();
        assert_eq!(
            m.entries(),
            &[
                (Op::GetCitizen, 6),
                (Op::GetParcel, 3),
                (Op::ListParcelsByHolder, 1)
            ]
        );
        let full = Mix::parse("interop.business.v1.BusinessRegistryService/GetEnterprise").unwrap();
        assert_eq!(full.entries(), &[(Op::GetEnterprise, 1)]);
        assert!(Mix::parse("").unwrap_err().contains("no method"));
        assert!(Mix::parse("GetCitizens=1").unwrap_err().contains("one of"));
        assert!(Mix::parse("GetCitizen=0").unwrap_err().contains("weight"));
        assert!(Mix::parse("GetCitizen=x").unwrap_err().contains("weight"));
        assert!(Mix::parse("GetCitizen,GetCitizen=2")
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn mix_picks_in_proportion() {
        let m = Mix::parse("GetCitizen=3,GetEnterprise=1").unwrap();
        let mut rng = Rng::new(7);
        let n = 40_000;
        let citizens = (0..n)
            .filter(|_| m.pick(rng.next_u64()) == Op::GetCitizen)
            .count();
        let share = citizens as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    #[test]
    fn zipf_puts_most_draws_on_the_first_ranks_and_uniform_does_not() {
        let n = 1000;
        let mut rng = Rng::new(1);
        let zipf = Sampler::new(n, Distribution::Zipf(1.0));
        let draws = 50_000;
        let mut counts = vec![0usize; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // P(rank 1) = 1 / H(1000) ~ 0.1336 for s = 1.
        let first = counts[0] as f64 / draws as f64;
        assert!((first - 0.1336).abs() < 0.01, "rank 1 share {first}");
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        let uniform = Sampler::new(n, Distribution::Uniform);
        let mut counts = vec![0usize; n];
        for _ in 0..draws {
            counts[uniform.sample(&mut rng)] += 1;
        }
        let max = *counts.iter().max().unwrap() as f64 / draws as f64;
        assert!(max < 0.003, "uniform max share {max}");
        assert!(counts.iter().all(|c| *c > 0));
    }

    #[test]
    fn keys_come_from_the_demo_extract_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        crate::demo::write_extract(dir.path(), 200).unwrap();
        let files = ExtractFiles::in_dir(dir.path());
        let mix = Mix::parse("VerifyCitizen,ListParcelsByHolder,GetEnterprise").unwrap();
        let keys = Keys::load(&files, &mix).unwrap();
        assert_eq!(keys.citizens.len(), 200);
        assert!(keys.citizens.iter().all(|c| c.personal_id.len() == 12
            && !c.full_name.is_empty()
            && c.date_of_birth.is_some()));
        assert_eq!(keys.parcels.len(), 100);
        assert!(!keys.holders.is_empty());
        assert_eq!(keys.enterprises.len(), 20);

        // Only the files the mix needs are read.
        std::fs::remove_file(&files.enterprises).unwrap();
        assert!(Keys::load(&files, &Mix::single(Op::GetCitizen)).is_ok());
        let e = Keys::load(&files, &Mix::single(Op::GetEnterprise)).unwrap_err();
        assert!(e.contains("enterprises.jsonl"), "{e}");

        let mut text = std::fs::read_to_string(&files.citizens).unwrap();
        text.push_str("{\"fullName\": \"no id\"}\n");
        std::fs::write(&files.citizens, text).unwrap();
        let e = Keys::load(&files, &Mix::single(Op::GetCitizen)).unwrap_err();
        assert!(e.contains("citizens.jsonl:201:"), "{e}");
        assert!(e.contains("personalId"), "{e}");
    }

    #[test]
    fn requests_carry_the_fixed_context_and_mask() {
        let keys = Keys {
            citizens: vec![CitizenKey {
                personal_id: "092302441037".into(),
                full_name: "Đặng Thị Anh".into(),
                date_of_birth: None,
            }],
            ..Keys::default()
        };
        let context = AccessContext {
            procedure_code: "1.004227".into(),
            dossier_id: "000.00.20.H13-241205-0001".into(),
            officer_id: String::new(),
        };
        let mask = pbjson_types::FieldMask {
            paths: vec!["full_name".into()],
        };
        let w = Workload::new(
            Mix::single(Op::GetCitizen),
            keys,
            Distribution::Uniform,
            context.clone(),
            Some(mask.clone()),
        );
        let Call::GetCitizen(r) = w.next(&mut Rng::new(3)) else {
            panic!("not GetCitizen");
        };
        assert_eq!(r.context, Some(context));
        assert_eq!(r.read_mask, Some(mask));
        assert_eq!(r.personal_id, "092302441037");
    }
}
