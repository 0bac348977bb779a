//! A safe owner of one zlib-rs inflate stream (through its C API, `libz-rs-sys`):
//! the only `unsafe` of the seekable index. flate2 hides what a checkpoint needs
//! (stopping at block boundaries, priming bits, setting and reading the window);
//! this exposes exactly those calls and nothing else.

use std::mem::size_of;

use libz_rs_sys as z;

/// `windowBits` for a raw deflate stream with a 32 KiB window.
pub(super) const RAW: i32 = -15;
/// `windowBits` for a gzip member (header and trailer checked by zlib).
pub(super) const GZIP: i32 = 15 + 16;
/// The largest window deflate refers back into.
pub(super) const WINDOW: usize = 32 * 1024;

/// How to stop: at the end of the input or output ([`Flush::None`]), or also at
/// the next deflate block boundary or after a gzip header ([`Flush::Block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    None,
    Block,
}

/// What one [`Inflater::inflate`] call did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// The end of the deflate stream (and, in gzip mode, of its trailer) was reached.
    pub stream_end: bool,
}

/// One inflate stream. Boxed: zlib keeps a pointer back to its `z_stream`, which
/// therefore must never move.
pub(super) struct Inflater {
    stream: Box<z::z_stream>,
}

// SAFETY: the stream and its state are owned exclusively by this value; zlib-rs
// keeps no thread-local or shared state for a stream.
unsafe impl Send for Inflater {}

impl Inflater {
    /// A new stream with `window_bits` ([`RAW`] or [`GZIP`]).
    pub(super) fn new(window_bits: i32) -> Result<Inflater, String> {
        let mut stream = Box::new(z::z_stream::default());
        // SAFETY: `stream` is a default-initialized z_stream (allocator set by
        // zlib-rs), the version string is zlib-rs's own and the size is of the
        // struct we pass.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *stream,
                window_bits,
                z::zlibVersion(),
                size_of::<z::z_stream>() as i32,
            )
        };
        if rc != z::Z_OK {
            return Err(format!("inflateInit2 failed ({rc})"));
        }
        Ok(Inflater { stream })
    }

    /// Starts a new stream with `window_bits`, keeping the allocations.
    pub(super) fn reset(&mut self, window_bits: i32) -> Result<(), String> {
        // SAFETY: the stream was initialized by `new`.
        let rc = unsafe { z::inflateReset2(&mut *self.stream, window_bits) };
        self.check(rc, "inflateReset2")
    }

    /// Feeds `bits` (0..=7) low bits of `value` before the next input byte (a
    /// checkpoint that starts inside a byte). Raw mode, before the first inflate.
    pub(super) fn prime(&mut self, bits: u8, value: u8) -> Result<(), String> {
        // SAFETY: the stream was initialized by `new`.
        let rc = unsafe { z::inflatePrime(&mut *self.stream, i32::from(bits), i32::from(value)) };
        self.check(rc, "inflatePrime")
    }

    /// Sets the 32 KiB of output that precede the resume point. Raw mode, before the
    /// first inflate.
    pub(super) fn set_dictionary(&mut self, window: &[u8]) -> Result<(), String> {
        let len = u32::try_from(window.len()).map_err(|_| "window too large".to_string())?;
        // SAFETY: the stream was initialized by `new`; `window` is valid for `len`
        // bytes, which zlib only reads.
        let rc = unsafe { z::inflateSetDictionary(&mut *self.stream, window.as_ptr(), len) };
        self.check(rc, "inflateSetDictionary")
    }

    /// The current window: the last (up to) 32 KiB of output of this stream.
    pub(super) fn window(&self) -> Vec<u8> {
        let mut out = vec![0u8; WINDOW];
        let mut len: u32 = 0;
        // SAFETY: the stream was initialized by `new`; `out` has room for the
        // largest window (32 KiB), as the API requires.
        let rc = unsafe { z::inflateGetDictionary(&*self.stream, out.as_mut_ptr(), &mut len) };
        if rc != z::Z_OK {
            return Vec::new();
        }
        out.truncate((len as usize).min(WINDOW));
        out
    }

    /// zlib's `data_type` after the last call: unused bits in the last byte
    /// consumed (low 3 bits), 64 while in the last block, 128 at a block boundary
    /// or right after a gzip header.
    pub(super) fn data_type(&self) -> i32 {
        self.stream.data_type
    }

    /// Inflates from `input` into `output`.
    pub(super) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<Step, String> {
        let avail_in = input.len().min(u32::MAX as usize);
        let avail_out = output.len().min(u32::MAX as usize);
        self.stream.next_in = input.as_ptr().cast_mut();
        self.stream.avail_in = avail_in as u32;
        self.stream.next_out = output.as_mut_ptr();
        self.stream.avail_out = avail_out as u32;
        let flush = match flush {
            Flush::None => z::Z_NO_FLUSH,
            Flush::Block => z::Z_BLOCK,
        };
        // SAFETY: the stream was initialized by `new`; next_in/avail_in describe
        // `input` (only read by zlib), next_out/avail_out describe `output`, and
        // both outlive the call. The pointers are cleared below.
        let rc = unsafe { z::inflate(&mut *self.stream, flush) };
        let step = Step {
            consumed: avail_in - self.stream.avail_in as usize,
            produced: avail_out - self.stream.avail_out as usize,
            stream_end: rc == z::Z_STREAM_END,
        };
        self.stream.next_in = std::ptr::null_mut();
        self.stream.avail_in = 0;
        self.stream.next_out = std::ptr::null_mut();
        self.stream.avail_out = 0;
        match rc {
            z::Z_OK | z::Z_STREAM_END => Ok(step),
            // No progress possible: more input (or output room) is needed.
            z::Z_BUF_ERROR => Ok(step),
            z::Z_NEED_DICT => Err("deflate stream wants a preset dictionary".to_string()),
            _ => Err(self.message(rc)),
        }
    }

    fn message(&self, rc: i32) -> String {
        if self.stream.msg.is_null() {
            return format!("inflate error {rc}");
        }
        // SAFETY: zlib sets `msg` to a static NUL-terminated string or leaves it null.
        let text = unsafe { std::ffi::CStr::from_ptr(self.stream.msg) };
        text.to_string_lossy().into_owned()
    }

    fn check(&self, rc: i32, call: &str) -> Result<(), String> {
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("{call}: {}", self.message(rc)))
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized by `new` and is ended exactly once.
        unsafe { z::inflateEnd(&mut *self.stream) };
    }
}
