use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write, Cursor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { ALLOCS.fetch_add(1, Ordering::Relaxed); unsafe { System.alloc(l) } }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { unsafe { System.dealloc(p, l) } }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 { ALLOCS.fetch_add(1, Ordering::Relaxed); unsafe { System.realloc(p, l, n) } }
}
#[global_allocator]
static G: Counting = Counting;
struct Mem { rx: Cursor<Vec<u8>>, tx: Vec<u8> }
impl Read for Mem { fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> { let n = self.rx.read(b)?; if n == 0 { Err(std::io::ErrorKind::WouldBlock.into()) } else { Ok(n) } } }
impl Write for Mem { fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.tx.extend_from_slice(b); Ok(b.len()) } fn flush(&mut self) -> std::io::Result<()> { Ok(()) } }
#[test]
fn measure() {
    let msg = vec![b'a'; 600];
    let n = 20000;
    let mut frames = Vec::new();
    let mask = [1u8,2,3,4];
    for _ in 0..n { frames.push(0x81); frames.push(0x80|126); frames.extend_from_slice(&(600u16).to_be_bytes()); frames.extend_from_slice(&mask); frames.extend(msg.iter().enumerate().map(|(i,b)| b ^ mask[i&3])); }
    let mut ws = tungstenite::WebSocket::from_raw_socket(Mem { rx: Cursor::new(frames.clone()), tx: Vec::with_capacity(64<<20) }, tungstenite::protocol::Role::Server, None);
    for _ in 0..100 { ws.read().unwrap(); ws.send(tungstenite::Message::text(String::from_utf8(msg.clone()).unwrap())).unwrap(); }
    let text = String::from_utf8(msg.clone()).unwrap();
    let a0 = ALLOCS.load(Ordering::SeqCst); let t0 = Instant::now();
    for _ in 100..n { let m = ws.read().unwrap(); std::hint::black_box(&m); ws.write(tungstenite::Message::text(text.clone())).unwrap(); }
    let (a, t) = (ALLOCS.load(Ordering::SeqCst) - a0, t0.elapsed());
    eprintln!("MEASURE tungstenite WebSocket: {:.2} allocs/msg, {:.0} ns/msg (read+write)", a as f64 / (n-100) as f64, t.as_nanos() as f64 / (n-100) as f64);
    // ours: FrameHeader + in-place unmask + stack header
    let cfg = sipfront::transport::stream::WsConfig::default();
    let _ = cfg;
}
