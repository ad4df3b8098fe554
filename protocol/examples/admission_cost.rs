//! The mean time to solve an admission proof of work, per level: 40 solutions each, from
//! disjoint nonce ranges, on one core.
#![allow(clippy::print_stdout)] // a measuring tool: its output is the point

fn main() {
    let d = tigress_protocol::crypto::sha256(&[b"x"]);
    for bits in [16u8, 17, 18, 19, 20] {
        let mut total = std::time::Duration::ZERO;
        let n: u32 = 40;
        for i in 0..n {
            let t = std::time::Instant::now();
            let _ = tigress_protocol::admission::solve_from(&d, bits, u64::from(i) << 40);
            total += t.elapsed();
        }
        println!("bits {bits}: mean {:?}", total / n);
    }
}
