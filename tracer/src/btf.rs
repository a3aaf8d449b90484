//! A read-only BTF reader over the raw bytes of /sys/kernel/btf/*: each type is found by its
//! offset in the type section and read on demand, names stay in the string section.
//!
//! msitrace reads a few dozen types of the ~130,000 in a kernel's BTF, once per start. A
//! parser that builds every type and every string as owned values (btf-rs: a `String` per
//! string, twice, and a map entry per type) was the largest part of the start: 0.23–0.31 s
//! of 0.40–0.55 on the build host, 2.3 s of 7.7 under the guests' TCG. aya-obj's reader keeps
//! its lookups crate-private and has no split (module) BTF.
//!
//! Split BTF (a module's) numbers its types on from its base's last id and its string
//! offsets on from the end of the base's strings; lookups by name see the base first, as the
//! kernel and libbpf do.

use std::{fmt, ops::Range, sync::Arc};

/// A parsed BTF object: vmlinux's, or a module's split over it. Cheap to clone.
#[derive(Clone)]
pub struct Btf(Arc<Obj>);

struct Obj {
    data: Vec<u8>,
    le: bool,
    /// The type and string sections, as byte ranges of `data`.
    types: Range<usize>,
    strs: Range<usize>,
    /// The first string offset of this object: 0, or the base's string length.
    str_base: u32,
    /// The id of `offsets[0]`: 1, or the id after the base's last.
    first_id: u32,
    /// Where each type of this object starts in `data`.
    offsets: Vec<u32>,
    /// (hash of the name, id) of every named type of this object, sorted.
    names: Vec<(u64, u32)>,
    base: Option<Btf>,
}

/// The kinds of BTF_KIND_*, numbered as the kernel's uapi numbers them (Void is id 0 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(kind: u32) -> Option<Kind> {
        use Kind::*;
        Some(match kind {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// Bytes after the 12-byte common header: fixed, or `vlen` records.
    fn extra_len(self, vlen: usize) -> usize {
        use Kind::*;
        match self {
            Int | Var | DeclTag => 4,
            Array => 12,
            Struct | Union | Datasec | Enum64 => 12 * vlen,
            Enum | FuncProto => 8 * vlen,
            Void | Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }

    /// The kind as error messages name it.
    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            Void => "void",
            Int => "int",
            Ptr => "ptr",
            Array => "array",
            Struct => "struct",
            Union => "union",
            Enum => "enum",
            Fwd => "fwd",
            Typedef => "typedef",
            Volatile => "volatile",
            Const => "const",
            Restrict => "restrict",
            Func => "func",
            FuncProto => "func-proto",
            Var => "var",
            Datasec => "datasec",
            Float => "float",
            DeclTag => "decl-tag",
            TypeTag => "type-tag",
            Enum64 => "enum64",
        }
    }
}

/// One type, read in place.
#[derive(Clone, Copy)]
pub struct Type<'a> {
    btf: &'a Btf,
    pub id: u32,
    pub kind: Kind,
    kind_flag: bool,
    vlen: usize,
    name_off: u32,
    size_or_type: u32,
    extra: &'a [u8],
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
    /// The width of a bitfield encoded in the member (the struct's kind_flag).
    pub bitfield_size: Option<u32>,
}

impl fmt::Debug for Type<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} `{}`",
            self.kind.name(),
            self.id,
            self.name().unwrap_or("?")
        )
    }
}

impl<'a> Type<'a> {
    pub fn name(&self) -> Result<&'a str, String> {
        self.btf.str_at(self.name_off)
    }

    /// The byte size of an int, enum, struct or union.
    pub fn size(&self) -> u32 {
        self.size_or_type
    }

    /// The type a pointer, typedef, qualifier, function or variable refers to.
    pub fn type_id(&self) -> u32 {
        self.size_or_type
    }

    /// An enum's signedness (kind_flag, 6.0 and later; unsigned before).
    pub fn is_signed(&self) -> bool {
        self.kind_flag
    }

    fn word(&self, i: usize) -> u32 {
        self.btf.0.u32_of(&self.extra[4 * i..4 * i + 4])
    }

    /// The members of a struct or union; none for other kinds.
    pub fn members(&self) -> impl Iterator<Item = Member> + 'a {
        let this = *self;
        let n = if matches!(self.kind, Kind::Struct | Kind::Union) {
            self.vlen
        } else {
            0
        };
        (0..n).map(move |i| {
            let offset = this.word(3 * i + 2);
            let (bit_offset, bitfield_size) = if this.kind_flag {
                (offset & 0xff_ffff, Some(offset >> 24))
            } else {
                (offset, None)
            };
            Member {
                name_off: this.word(3 * i),
                type_id: this.word(3 * i + 1),
                bit_offset,
                bitfield_size,
            }
        })
    }

    /// An enum's or enum64's enumerators: name and value, a 32-bit value sign-extended when
    /// the enum is signed.
    pub fn enumerators(&self) -> impl Iterator<Item = (Result<&'a str, String>, u64)> + 'a {
        let this = *self;
        let (n, step) = match self.kind {
            Kind::Enum => (self.vlen, 2),
            Kind::Enum64 => (self.vlen, 3),
            _ => (0, 2),
        };
        (0..n).map(move |i| {
            let name = this.btf.str_at(this.word(step * i));
            let value = if step == 3 {
                u64::from(this.word(3 * i + 1)) | (u64::from(this.word(3 * i + 2)) << 32)
            } else {
                let raw = this.word(2 * i + 1);
                if this.kind_flag {
                    i64::from(raw as i32) as u64
                } else {
                    u64::from(raw)
                }
            };
            (name, value)
        })
    }

    /// The parameter types of a function prototype, in order.
    pub fn params(&self) -> Vec<u32> {
        if self.kind != Kind::FuncProto {
            return Vec::new();
        }
        (0..self.vlen).map(|i| self.word(2 * i + 1)).collect()
    }
}

/// FNV-1a: the names are short and this runs over every one of them at each start.
fn hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Obj {
    fn u32_of(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    fn u32_at(&self, off: usize) -> u32 {
        self.u32_of(&self.data[off..off + 4])
    }

    /// The bytes of the string at `off` of this object's own section, without its NUL.
    fn local_str(&self, off: u32) -> Option<&[u8]> {
        let start = self.strs.start + off.checked_sub(self.str_base)? as usize;
        let rest = self.data.get(start..self.strs.end)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    fn str_bytes(&self, off: u32) -> Option<&[u8]> {
        match &self.base {
            Some(base) if off < self.str_base => base.0.str_bytes(off),
            _ => self.local_str(off),
        }
    }
}

impl Btf {
    /// Parse vmlinux's BTF (or any base BTF).
    pub fn from_bytes(bytes: &[u8]) -> Result<Btf, String> {
        Obj::parse(bytes.to_vec(), None).map(|o| Btf(Arc::new(o)))
    }

    /// Parse a module's split BTF over `base`.
    pub fn from_split_bytes(bytes: &[u8], base: &Btf) -> Result<Btf, String> {
        Obj::parse(bytes.to_vec(), Some(base.clone())).map(|o| Btf(Arc::new(o)))
    }

    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Btf, String> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Obj::parse(bytes, None).map(|o| Btf(Arc::new(o)))
    }

    /// The string at `off` (a name offset of this object or of its base).
    pub fn str_at(&self, off: u32) -> Result<&str, String> {
        let bytes = self
            .0
            .str_bytes(off)
            .ok_or_else(|| format!("no string at offset {off}"))?;
        std::str::from_utf8(bytes).map_err(|_| format!("the string at offset {off} is not UTF-8"))
    }

    /// This object's own type ids (a split object's start after its base's).
    pub fn ids(&self) -> Range<u32> {
        self.0.first_id..self.0.first_id + self.0.offsets.len() as u32
    }

    /// The type `id`, in this object or its base; id 0 is void.
    pub fn ty(&self, id: u32) -> Result<Type<'_>, String> {
        let o = &self.0;
        if id < o.first_id {
            if id == 0 {
                return Ok(Type {
                    btf: self,
                    id,
                    kind: Kind::Void,
                    kind_flag: false,
                    vlen: 0,
                    name_off: 0,
                    size_or_type: 0,
                    extra: &[],
                });
            }
            if let Some(base) = &o.base {
                return base.ty(id).map(|t| Type { btf: self, ..t });
            }
        }
        let at = (id - o.first_id) as usize;
        let off = *o
            .offsets
            .get(at)
            .ok_or_else(|| format!("no type with id {id}"))? as usize;
        let info = o.u32_at(off + 4);
        // parse() checked every kind and length.
        let kind = Kind::from_raw((info >> 24) & 0x1f).unwrap_or(Kind::Void);
        let vlen = (info & 0xffff) as usize;
        let end = off + 12 + kind.extra_len(vlen);
        Ok(Type {
            btf: self,
            id,
            kind,
            kind_flag: info >> 31 == 1,
            vlen,
            name_off: o.u32_at(off),
            size_or_type: o.u32_at(off + 8),
            extra: &o.data[off + 12..end],
        })
    }

    /// Every type named `name`: the base's first, then this object's.
    pub fn types_by_name(&self, name: &str) -> Vec<Type<'_>> {
        let mut out = match &self.0.base {
            Some(base) => base
                .ids_by_name(name)
                .into_iter()
                .filter_map(|id| self.ty(id).ok())
                .collect(),
            None => Vec::new(),
        };
        out.extend(
            self.ids_by_name(name)
                .into_iter()
                .filter_map(|id| self.ty(id).ok()),
        );
        out
    }

    /// This object's own types named `name`, by id.
    fn ids_by_name(&self, name: &str) -> Vec<u32> {
        let o = &self.0;
        let h = hash(name.as_bytes());
        let start = o.names.partition_point(|&(x, _)| x < h);
        o.names[start..]
            .iter()
            .take_while(|&&(x, _)| x == h)
            .filter(|&&(_, id)| {
                self.ty(id)
                    .ok()
                    .and_then(|t| o.str_bytes(t.name_off))
                    .is_some_and(|n| n == name.as_bytes())
            })
            .map(|&(_, id)| id)
            .collect()
    }
}

impl Obj {
    fn parse(data: Vec<u8>, base: Option<Btf>) -> Result<Obj, String> {
        let (le, types, strs) = header(&data)?;
        let (first_id, str_base) = match &base {
            None => (1, 0),
            Some(b) => (b.ids().end, b.0.str_base + b.0.strs.len() as u32),
        };
        let mut obj = Obj {
            data,
            le,
            types,
            strs,
            str_base,
            first_id,
            offsets: Vec::new(),
            names: Vec::new(),
            base,
        };
        let mut off = obj.types.start;
        while off < obj.types.end {
            let id = first_id as usize + obj.offsets.len();
            if off + 12 > obj.types.end {
                return Err(format!(
                    "type {id} is cut off by the end of the type section"
                ));
            }
            let info = obj.u32_at(off + 4);
            let raw = (info >> 24) & 0x1f;
            let kind =
                Kind::from_raw(raw).ok_or_else(|| format!("type {id} has unknown kind {raw}"))?;
            let end = off + 12 + kind.extra_len((info & 0xffff) as usize);
            if end > obj.types.end {
                return Err(format!("type {id} runs past the end of the type section"));
            }
            let name_off = obj.u32_at(off);
            if name_off != 0 {
                let name = obj.str_bytes(name_off).ok_or_else(|| {
                    format!("type {id} names the string at offset {name_off}, which is not there")
                })?;
                obj.names.push((hash(name), id as u32));
            }
            obj.offsets.push(off as u32);
            off = end;
        }
        obj.names.sort_unstable();
        Ok(obj)
    }
}

/// The byte order and the type and string sections, checked to lie inside the data.
fn header(bytes: &[u8]) -> Result<(bool, Range<usize>, Range<usize>), String> {
    if bytes.len() < 24 {
        return Err(format!(
            "{} bytes, shorter than a BTF header (24)",
            bytes.len()
        ));
    }
    let le = match [bytes[0], bytes[1]] {
        [0x9f, 0xeb] => true,
        [0xeb, 0x9f] => false,
        m => {
            return Err(format!(
                "no BTF magic (0xeb9f) at offset 0 but {:02x}{:02x}",
                m[1], m[0]
            ));
        }
    };
    if bytes[2] != 1 {
        return Err(format!("BTF version {}, this reader knows 1", bytes[2]));
    }
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        u64::from(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20));
    let len = bytes.len() as u64;
    if hdr_len < 24 || hdr_len > len {
        return Err(format!("header length {hdr_len} outside the {len} bytes"));
    }
    for (what, off, n) in [("type", type_off, type_len), ("string", str_off, str_len)] {
        if hdr_len + off + n > len {
            return Err(format!(
                "{what} section at offset {} ({n} bytes) runs past the end ({len} bytes)",
                hdr_len + off
            ));
        }
    }
    let range = |off: u64, n: u64| (hdr_len + off) as usize..(hdr_len + off + n) as usize;
    Ok((le, range(type_off, type_len), range(str_off, str_len)))
}
