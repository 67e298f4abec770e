use agentvine::{Board, NewTask};
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let b = Board::init(&dir).unwrap();
    for i in 0..20 {
        b.add(NewTask {
            description: format!("t{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    let n: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(300);
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let c = b.claim("w1").unwrap().unwrap();
        b.complete(c.task.id, "w1", None).unwrap();
        b.add(NewTask {
            description: format!("n{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    eprintln!("{:?} per cycle", t0.elapsed() / n as u32);
}
