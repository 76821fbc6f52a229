//! Small OS helpers that need raw system calls (and therefore `unsafe`), kept here so that
//! the pool code above stays free of `unsafe`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reserves `len` bytes of real storage for `file` (posix_fallocate), so that a full disk
/// is an error now instead of a SIGBUS on some later store into the mapping.
pub fn allocate_file(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the fd is owned by `file`,
    // which outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    // posix_fallocate returns the error number instead of setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
