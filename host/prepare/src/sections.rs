//! Byte-level section handling: list a module's sections and reassemble a module from them,
//! replacing only the export and/or name sections. Every other section is copied byte for byte,
//! so function, global and type indices never move.

use super::PrepareError;
use wasm_encoder::{ExportSection, NameSection, RawSection};
use wasmparser::{CustomSectionReader, Parser};

/// Section id of the export section.
pub(crate) const EXPORT_SECTION_ID: u8 = 7;

/// One top-level section of a module.
pub(crate) struct Section<'a> {
    /// Section id (0 for custom sections).
    pub id: u8,
    /// The section's contents (for a custom section this includes its name).
    pub data: &'a [u8],
    /// The reader of a custom section.
    pub custom: Option<CustomSectionReader<'a>>,
}

impl Section<'_> {
    /// The custom section's name, if this is one.
    pub fn custom_name(&self) -> Option<&str> {
        self.custom.as_ref().map(|c| c.name())
    }
}

/// Lists the top-level sections of an (already validated) module, in order.
pub(crate) fn sections(wasm: &[u8]) -> Result<Vec<Section<'_>>, PrepareError> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| PrepareError::invalid(&e))?;
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        let data = wasm
            .get(range.clone())
            .ok_or_else(|| PrepareError::Invalid {
                offset: range.start,
                message: "section extends past the end of the module".to_string(),
            })?;
        let custom = match payload {
            wasmparser::Payload::CustomSection(c) => Some(c),
            _ => None,
        };
        out.push(Section { id, data, custom });
    }
    Ok(out)
}

/// Position of a known non-custom section in the order the binary format requires.
pub(crate) fn rank(id: u8) -> Option<u8> {
    // type, import, function, table, memory, tag, global, export, start, element,
    // data count, code, data.
    const ORDER: [u8; 13] = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
    ORDER.iter().position(|&x| x == id).map(|p| p as u8)
}

/// Rebuilds `wasm` with a new export section and/or a new name section.
///
/// `exports`: replaces the export section, or is inserted where the format wants it if the module
/// had none. `names`: replaces the `name` custom section in place, or is appended at the end.
/// `drop_custom`: custom sections (by name) to leave out.
pub(crate) fn assemble(
    wasm: &[u8],
    exports: Option<&ExportSection>,
    names: Option<&NameSection>,
    drop_custom: &dyn Fn(&str) -> bool,
) -> Result<Vec<u8>, PrepareError> {
    let mut module = wasm_encoder::Module::new();
    let mut exports_done = exports.is_none();
    let mut names_done = names.is_none();
    let export_rank = rank(EXPORT_SECTION_ID);
    for s in sections(wasm)? {
        if let Some(name) = s.custom_name() {
            if name == "name" {
                if let Some(n) = names {
                    if !names_done {
                        module.section(n);
                        names_done = true;
                    }
                    continue;
                }
            }
            if drop_custom(name) {
                continue;
            }
        } else if let Some(e) = exports {
            if s.id == EXPORT_SECTION_ID {
                module.section(e);
                exports_done = true;
                continue;
            }
            if !exports_done && rank(s.id) > export_rank {
                module.section(e);
                exports_done = true;
            }
        }
        module.section(&RawSection {
            id: s.id,
            data: s.data,
        });
    }
    if let (false, Some(e)) = (exports_done, exports) {
        module.section(e);
    }
    if let (false, Some(n)) = (names_done, names) {
        module.section(n);
    }
    Ok(module.finish())
}
