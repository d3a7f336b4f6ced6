//! A TrueType font for the examples' pictures. plotters draws text only
//! with a registered font and none is bundled, so the pictures use the
//! system's (Debian: `fonts-dejavu-core`) and leave the text out without
//! one.

/// Registers the first of the usual system fonts found as "sans-serif";
/// whether one was.
pub fn register() -> bool {
    const FONTS: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    FONTS.iter().any(|path| {
        std::fs::read(path).is_ok_and(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
                .is_ok()
        })
    })
}
