//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to find struct member
//! offsets (through anonymous unions and structs) and enum values by name.
//!
//! Rust eBPF programs get no CO-RE relocations, so userspace resolves every offset they need here
//! and passes them in as globals. Format: `Documentation/bpf/btf.rst` (stable since 5.2).

use std::{collections::HashMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read { path: String, source: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct or union named `{0}`")]
    NoSuchType(String),
    #[error("BTF struct `{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("member `{ty}.{member}` is a bitfield, not byte-addressable")]
    Bitfield { ty: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union.
    Composite {
        members: Vec<Member>,
    },
    /// Typedef, const, volatile, restrict, type tag: refers to another type.
    Alias {
        target: u32,
    },
    Enum {
        values: Vec<(String, i64)>,
    },
    Func {
        proto: u32,
    },
    FuncProto {
        params: u32,
    },
    Other,
}

/// Parsed BTF: types by id (id 0 is `void`) and struct/union/enum ids by name.
pub struct Btf {
    types: Vec<Type>,
    composites_by_name: HashMap<String, u32>,
    enums_by_name: HashMap<String, u32>,
    funcs_by_name: HashMap<String, u32>,
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |at: usize| -> Result<u16, BtfError> {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfError::Malformed("truncated header"))
        };
        if u16_at(0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (big-endian BTF is not supported)"));
        }
        let header = Reader { data, pos: 4 };
        let hdr_len = header.u32_at(4)? as usize;
        let type_off = header.u32_at(8)? as usize;
        let type_len = header.u32_at(12)? as usize;
        let str_off = header.u32_at(16)? as usize;
        let str_len = header.u32_at(20)? as usize;
        let types_start = hdr_len.checked_add(type_off).ok_or(BtfError::Malformed("type offset"))?;
        let strings_start = hdr_len.checked_add(str_off).ok_or(BtfError::Malformed("str offset"))?;
        let types_end = types_start + type_len;
        let strings = data
            .get(strings_start..strings_start + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        if types_end > data.len() {
            return Err(BtfError::Malformed("type section out of bounds"));
        }
        let name = |off: u32| -> String {
            let Some(rest) = strings.get(off as usize..) else { return String::new() };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };

        let mut btf = Btf {
            types: vec![Type::Other],
            composites_by_name: HashMap::new(),
            enums_by_name: HashMap::new(),
            funcs_by_name: HashMap::new(),
        };
        let mut r = Reader { data: &data[..types_end], pos: types_start };
        while r.pos < types_end {
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let id = btf.types.len() as u32;
            let ty = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    r.skip(4)?;
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FLOAT => Type::Other,
                KIND_FUNC => {
                    btf.funcs_by_name.entry(name(name_off)).or_insert(id);
                    Type::Func { proto: size_or_type }
                }
                KIND_ARRAY => {
                    r.skip(12)?;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let m_name = r.u32()?;
                        let type_id = r.u32()?;
                        let offset = r.u32()?;
                        let (bit_offset, bitfield_size) =
                            if kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
                        members.push(Member { name: name(m_name), type_id, bit_offset, bitfield_size });
                    }
                    let type_name = name(name_off);
                    if !type_name.is_empty() {
                        // Keep the first definition: later duplicates are rare and equal.
                        btf.composites_by_name.entry(type_name).or_insert(id);
                    }
                    Type::Composite { members }
                }
                KIND_ENUM | KIND_ENUM64 => {
                    let signed = kind_flag;
                    let mut values = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let v_name = r.u32()?;
                        let value = if kind == KIND_ENUM {
                            let raw = r.u32()?;
                            if signed { i64::from(raw as i32) } else { i64::from(raw) }
                        } else {
                            let lo = u64::from(r.u32()?);
                            let hi = u64::from(r.u32()?);
                            (hi << 32 | lo) as i64
                        };
                        values.push((name(v_name), value));
                    }
                    let type_name = name(name_off);
                    if !type_name.is_empty() {
                        btf.enums_by_name.entry(type_name).or_insert(id);
                    }
                    Type::Enum { values }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias { target: size_or_type }
                }
                KIND_FUNC_PROTO => {
                    r.skip(8 * vlen as usize)?;
                    Type::FuncProto { params: vlen }
                }
                KIND_DATASEC => {
                    r.skip(12 * vlen as usize)?;
                    Type::Other
                }
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            btf.types.push(ty);
        }
        Ok(btf)
    }

    /// Byte offset of `member` in struct/union `ty`, searching through anonymous members, the
    /// way C resolves `tw->tw_daddr` inside `sock_common`'s anonymous unions.
    pub fn member_offset(&self, ty: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self.composites_by_name.get(ty).ok_or_else(|| BtfError::NoSuchType(ty.into()))?;
        let found = self
            .find_member(id, member, 0)
            .ok_or_else(|| BtfError::NoSuchMember { ty: ty.into(), member: member.into() })?;
        let (bit_offset, bitfield_size) = found;
        if bitfield_size != 0 || bit_offset % 8 != 0 {
            return Err(BtfError::Bitfield { ty: ty.into(), member: member.into() });
        }
        Ok(bit_offset / 8)
    }

    /// Offset of a dotted path, e.g. `net` + `ns.inum`.
    pub fn path_offset(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        let mut offset = 0;
        let mut current = ty.to_owned();
        for (i, part) in path.split('.').enumerate() {
            offset += self.member_offset(&current, part)?;
            if i + 1 < path.split('.').count() {
                current = self.member_type_name(&current, part)?;
            }
        }
        Ok(offset)
    }

    fn member_type_name(&self, ty: &str, member: &str) -> Result<String, BtfError> {
        let id = *self.composites_by_name.get(ty).ok_or_else(|| BtfError::NoSuchType(ty.into()))?;
        let type_id = self
            .find_member_type(id, member)
            .ok_or_else(|| BtfError::NoSuchMember { ty: ty.into(), member: member.into() })?;
        let resolved = self.resolve(type_id);
        self.composites_by_name
            .iter()
            .find(|&(_, &id)| id == resolved)
            .map(|(name, _)| name.clone())
            .ok_or_else(|| BtfError::NoSuchType(format!("{ty}.{member} (anonymous type)")))
    }

    /// Values of enum `ty` by name.
    pub fn enum_values(&self, ty: &str) -> Option<&[(String, i64)]> {
        match self.types.get(*self.enums_by_name.get(ty)? as usize)? {
            Type::Enum { values } => Some(values),
            _ => None,
        }
    }

    /// Number of parameters of kernel function `name`, if BTF describes it (functions that
    /// were inlined everywhere are absent: they cannot be hooked either).
    pub fn func_params(&self, name: &str) -> Option<u32> {
        let Type::Func { proto } = self.types.get(*self.funcs_by_name.get(name)? as usize)? else { return None };
        match self.types.get(*proto as usize)? {
            Type::FuncProto { params } => Some(*params),
            _ => None,
        }
    }

    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias { target }) => id = *target,
                _ => break,
            }
        }
        id
    }

    fn members(&self, id: u32) -> &[Member] {
        match self.types.get(self.resolve(id) as usize) {
            Some(Type::Composite { members }) => members,
            _ => &[],
        }
    }

    /// (bit offset, bitfield size) of `name` in composite `id`, recursing into anonymous members.
    fn find_member(&self, id: u32, name: &str, base_bits: u32) -> Option<(u32, u32)> {
        for m in self.members(id) {
            if m.name == name {
                return Some((base_bits + m.bit_offset, m.bitfield_size));
            }
            if m.name.is_empty() {
                if let Some(found) = self.find_member(m.type_id, name, base_bits + m.bit_offset) {
                    return Some(found);
                }
            }
        }
        None
    }

    fn find_member_type(&self, id: u32, name: &str) -> Option<u32> {
        for m in self.members(id) {
            if m.name == name {
                return Some(m.type_id);
            }
            if m.name.is_empty() {
                if let Some(found) = self.find_member_type(m.type_id, name) {
                    return Some(found);
                }
            }
        }
        None
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        self.data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(BtfError::Malformed("truncated"))
    }
    fn u32(&mut self) -> Result<u32, BtfError> {
        let v = self.u32_at(self.pos)?;
        self.pos += 4;
        Ok(v)
    }
    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        if self.pos + n > self.data.len() {
            return Err(BtfError::Malformed("truncated type"));
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob by hand: `struct outer { int a; union { int b; int c; }; }`.
    fn tiny_btf() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0E\0X\0".to_vec();
        let off = |s: &str| {
            let needle = format!("\0{s}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int (4 bytes)
        push(&[off("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous union { b @0, c @0 }
        push(&[0, KIND_UNION << 24 | 2, 4, off("b"), 1, 0, off("c"), 1, 0]);
        // 3: struct outer { a @0, <anon> @32 bits }
        push(&[off("outer"), KIND_STRUCT << 24 | 2, 8, off("a"), 1, 0, 0, 2, 32]);
        // 4: enum E { X = 38 }
        push(&[off("E"), KIND_ENUM << 24 | 1, 4, off("X"), 38]);
        // 5: proto (int, int) -> int; 6: func a of type 5
        push(&[0, KIND_FUNC_PROTO << 24 | 2, 1, 0, 1, 0, 1]);
        push(&[off("a"), KIND_FUNC << 24, 5]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 4);
        assert!(matches!(btf.member_offset("outer", "zz"), Err(BtfError::NoSuchMember { .. })));
        assert!(matches!(btf.member_offset("nope", "a"), Err(BtfError::NoSuchType(_))));
        assert_eq!(btf.enum_values("E").unwrap(), &[("X".to_string(), 38)]);
        assert_eq!(btf.func_params("a"), Some(2));
        assert_eq!(btf.func_params("outer"), None);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(Btf::parse(b"nonsense").is_err());
        let blob = tiny_btf();
        for cut in [0, 3, 10, 30, blob.len() - 1] {
            assert!(Btf::parse(&blob[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Against the running kernel's BTF: the members twtrace needs exist and are consistent.
    /// Exact values differ per kernel, so check relations that hold on every layout.
    /// twtrace needs BTF, so a kernel without it fails this test, unless the runner says the
    /// kernel has none (`TWTRACE_TEST_NO_BTF=<why>`, which the VM matrix sets only for kernels
    /// its table lists without BTF): then the skip is recorded with that reason.
    #[test]
    fn running_kernel_offsets() {
        let btf = match Btf::from_file(Btf::VMLINUX) {
            Ok(btf) => btf,
            Err(e) => match std::env::var("TWTRACE_TEST_NO_BTF").ok().filter(|v| !v.is_empty()) {
                Some(why) => return record_skip(&format!("{} not readable: {why}", Btf::VMLINUX)),
                None => panic!("{} not readable ({e}); twtrace needs kernel BTF", Btf::VMLINUX),
            },
        };
        let daddr = btf.member_offset("sock_common", "skc_daddr").unwrap();
        let saddr = btf.member_offset("sock_common", "skc_rcv_saddr").unwrap();
        assert_eq!(saddr, daddr + 4, "skc_addrpair is daddr then rcv_saddr");
        let dport = btf.member_offset("sock_common", "skc_dport").unwrap();
        assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), dport + 2);
        assert_eq!(btf.member_offset("inet_timewait_sock", "__tw_common").unwrap(), 0);
        let tw_timer = btf.member_offset("inet_timewait_sock", "tw_timer").unwrap();
        assert!(tw_timer > btf.member_offset("sock_common", "skc_v6_rcv_saddr").unwrap());
        assert!(btf.member_offset("timer_list", "function").unwrap() > 0);
        assert!(btf.path_offset("net", "ns.inum").unwrap() > 0);
        // Hook functions' prototypes (fexit reads the return value after the last argument).
        assert!(matches!(btf.func_params("__inet_hash_connect"), Some(4 | 5)));
        assert_eq!(btf.func_params("inet_csk_get_port"), Some(2));
        assert_eq!(btf.func_params("tcp_set_state"), Some(2));
        // The sk_buff drop reasons used by the drops family resolve by name.
        let reasons = btf.enum_values("skb_drop_reason");
        if let Some(reasons) = reasons {
            assert!(reasons.iter().any(|(n, _)| n == "SKB_DROP_REASON_NOT_SPECIFIED"));
        }
    }

    /// A skip in the runner's log (`TWTRACE_TEST_SKIP_LOG`), in the record format of
    /// xtask/src/vm/protocol.rs (`Skip::to_line`), and on stderr.
    fn record_skip(reason: &str) {
        let test = std::thread::current().name().unwrap_or("?").rsplit("::").next().unwrap_or("?").to_owned();
        let line = format!("test={test} family=btf backend=auto reason={reason}");
        eprintln!("SKIPPED {line}");
        if let Some(log) = std::env::var_os("TWTRACE_TEST_SKIP_LOG").filter(|v| !v.is_empty()) {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("skip log");
            file.write_all(format!("{line}\n").as_bytes()).expect("skip log");
        }
    }
}
