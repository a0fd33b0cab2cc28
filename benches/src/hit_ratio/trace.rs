//! Seeded request traces: Zipf popularity over a catalogue whose bytes are a multiple of the
//! cache capacity, with chunk-sized or mixed-size entries, optionally interleaved with
//! one-pass scans.
//!
//! Everything is derived from the seed with SplitMix64 (written here, so a trace never
//! changes with a dependency's version): the same parameters give the same trace, byte for
//! byte, on any machine.

use serde::Serialize;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough for sampling.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (n > 0); the modulo bias is below 2^-40 for the n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Zipf over ranks 1..=n: P(rank k) ∝ 1 / k^alpha, sampled by binary search in the CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, alpha: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += (k as f64).powf(-alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank, 0-based (0 is the most popular).
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// Probability of the 0-based rank.
    pub fn probability(&self, rank: usize) -> f64 {
        let below = rank.checked_sub(1).map_or(0.0, |r| self.cdf[r]);
        self.cdf[rank] - below
    }
}

/// How catalogue entries are sized and whether scans are mixed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Every entry is one full chunk.
    Chunks,
    /// Entry sizes log-uniform between `MIXED_MIN` and one chunk (small objects and the
    /// short last chunks of large ones), independent of popularity.
    Mixed,
    /// Chunk-sized Zipf requests, and every so often a one-pass scan of chunks never
    /// requested before or again (a crawler, a backup, a client reading a whole archive).
    Scan,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Chunks => "chunks",
            Shape::Mixed => "mixed-size",
            Shape::Scan => "scan-polluted",
        }
    }
}

/// Smallest entry of the mixed-size catalogue.
pub const MIXED_MIN: u64 = 4 << 10;

/// What a trace is made from.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Params {
    pub shape: Shape,
    pub alpha: f64,
    pub requests: usize,
    /// Cache capacity in bytes (the catalogue is sized from it).
    pub capacity: u64,
    pub chunk: u64,
    /// Catalogue bytes as a multiple of `capacity`.
    pub catalogue_factor: u64,
    /// Fraction of requests that belong to scans ([`Shape::Scan`] only).
    pub scan_share: f64,
    pub seed: u64,
}

/// A generated trace: entry sizes by id, and the requested ids in order. Ids below
/// `catalogue` are Zipf entries; ids from `catalogue` on are scan chunks, each used once.
pub struct Trace {
    pub sizes: Vec<u32>,
    pub requests: Vec<u32>,
    pub catalogue: usize,
    pub catalogue_bytes: u64,
    /// Each catalogue id's probability of being requested by the Zipf part.
    pub probability: Vec<f64>,
    /// Length of one scan in requests ([`Shape::Scan`]), else 0.
    pub scan_len: usize,
}

impl Trace {
    pub fn generate(p: &Params) -> Trace {
        // One stream per purpose, so changing e.g. the request count keeps the catalogue.
        let mut size_rng = Rng::new(p.seed ^ 0x5153_1ae5);
        let mut perm_rng = Rng::new(p.seed ^ 0x9e47_0001);
        let mut req_rng = Rng::new(p.seed ^ 0x7e9a_11ce ^ p.alpha.to_bits());
        let target = p.capacity.saturating_mul(p.catalogue_factor);
        let mut sizes = Vec::new();
        let mut catalogue_bytes = 0u64;
        while catalogue_bytes < target {
            let size = match p.shape {
                Shape::Chunks | Shape::Scan => p.chunk,
                Shape::Mixed => {
                    let (lo, hi) = ((MIXED_MIN as f64).ln(), (p.chunk as f64).ln());
                    ((lo + (hi - lo) * size_rng.unit()).exp() as u64).clamp(1, p.chunk)
                }
            };
            sizes.push(u32::try_from(size).expect("chunk size fits in u32"));
            catalogue_bytes += size;
        }
        let catalogue = sizes.len();
        // rank -> id: a seeded shuffle, so popularity is independent of id and size.
        let mut by_rank: Vec<u32> = (0..catalogue as u32).collect();
        for i in (1..catalogue).rev() {
            let j = perm_rng.below(i as u64 + 1) as usize;
            by_rank.swap(i, j);
        }
        let zipf = Zipf::new(catalogue, p.alpha);
        let mut probability = vec![0.0; catalogue];
        for (rank, &id) in by_rank.iter().enumerate() {
            probability[id as usize] = zipf.probability(rank);
        }

        let scan_len = match p.shape {
            Shape::Scan => ((p.capacity / p.chunk) as usize).max(1),
            _ => 0,
        };
        // Zipf requests between two scans, so that scans are `scan_share` of all requests.
        let between = if scan_len > 0 {
            ((scan_len as f64) * (1.0 - p.scan_share) / p.scan_share).round() as usize
        } else {
            usize::MAX
        };
        let mut requests = Vec::with_capacity(p.requests);
        let mut since_scan = 0;
        while requests.len() < p.requests {
            if since_scan == between {
                since_scan = 0;
                for _ in 0..scan_len.min(p.requests - requests.len()) {
                    requests.push(sizes.len() as u32);
                    sizes.push(p.chunk as u32);
                }
                continue;
            }
            requests.push(by_rank[zipf.sample(&mut req_rng)]);
            since_scan += 1;
        }
        Trace {
            sizes,
            requests,
            catalogue,
            catalogue_bytes,
            probability,
            scan_len,
        }
    }

    /// How many requests belong to scans.
    pub fn scan_requests(&self) -> usize {
        self.sizes.len() - self.catalogue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_follows_its_law() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Rank 1 is about twice as popular as rank 2 and ten times rank 10.
        let r = |a: usize, b: usize| f64::from(counts[a]) / f64::from(counts[b]);
        assert!((1.8..2.2).contains(&r(0, 1)), "{}", r(0, 1));
        assert!((8.0..12.5).contains(&r(0, 9)), "{}", r(0, 9));
        let total: f64 = (0..1000).map(|k| z.probability(k)).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn traces_are_reproducible_and_sized() {
        let p = Params {
            shape: Shape::Scan,
            alpha: 0.8,
            requests: 50_000,
            capacity: 64 << 20,
            chunk: 1 << 20,
            catalogue_factor: 10,
            scan_share: 0.2,
            seed: 42,
        };
        let a = Trace::generate(&p);
        let b = Trace::generate(&p);
        assert_eq!(a.requests, b.requests);
        assert_eq!(a.catalogue, 640);
        assert_eq!(a.requests.len(), 50_000);
        let share = a.scan_requests() as f64 / a.requests.len() as f64;
        assert!((0.18..0.22).contains(&share), "scan share {share}");
        let m = Trace::generate(&Params {
            shape: Shape::Mixed,
            ..p
        });
        assert!(m.catalogue_bytes >= 640 << 20);
        assert!(m.sizes.iter().all(|&s| (4096..=1 << 20).contains(&s)));
    }
}
