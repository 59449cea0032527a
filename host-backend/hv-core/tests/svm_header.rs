//! Pins hv-core's SVM definitions to Linux 6.12's headers.
//!
//! The numbers in `hv_core::svm` and `hv_core::msr` are compared with what
//! a C compiler computes from the real headers: the test writes a C
//! program that includes them by path, prints every constant, size and
//! field offset, and compares.  A text scan of the headers then makes sure
//! nothing in the mirrored scope was forgotten, and lists what was left
//! out on purpose, with the reason.
//!
//! Headers (from the tree at `PVRS_KERNEL_SRC`, by default
//! `$HOME/.cache/pvrs/src/linux-source-6.12`; nothing is written there):
//! - `arch/x86/include/uapi/asm/svm.h`: the `SVM_EXIT_*` codes.
//! - `arch/x86/include/asm/svm.h`: the VMCB structs, `INTERCEPT_*`, and
//!   the control-field bits.  It is kernel-internal and does not compile
//!   from userspace as is, so the program gets a small shim: the kernel's
//!   `u8`..`u64`, `__packed`, `BIT`/`BIT_ULL`/`GENMASK_ULL`, `PAGE_SIZE`,
//!   the two CR0 bits `SVM_CR0_SELECTIVE_MASK` uses, `BUILD_BUG_ON` and
//!   `ASSERT_STRUCT_OFFSET` as C11 `_Static_assert` (so the header's own
//!   `__unused_size_checks` run too), `test_bit`/`__set_bit` stand-ins for
//!   the GHCB accessors, an empty `uapi/asm/kvm.h` (svm.h uses nothing of
//!   it), and an `asm/hyperv-tlfs.h` holding only `struct
//!   hv_vmcb_enlightenments`, copied textually out of the real
//!   hyperv-tlfs.h (which pulls in half the kernel).
//! - `arch/x86/include/asm/msr-index.h`: MSR numbers and EFER/APIC_BASE
//!   bits; it needs only `linux/bits.h`, whose macros the shim provides.
//! - `arch/x86/kvm/svm/svm.h`: the VMCB clean-bit enum, extracted as text
//!   (the header itself needs KVM's internals).
//! - The memslot and CPUID limits and flags hv-core uses, extracted as
//!   single `#define` lines from `include/uapi/linux/kvm.h`,
//!   `arch/x86/include/uapi/asm/kvm.h`, `include/linux/kvm_host.h` and
//!   `arch/x86/include/asm/kvm_host.h` (none of which compiles alone from
//!   userspace); only these names are in scope there.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use hv_core::svm::vmcb::{
    self, clean, Vmcb, VmcbControlArea, VmcbSaveArea, VmcbSegment, INTERCEPT_WORDS,
    VMCB_CONTROL_AREA_SIZE, VMCB_SAVE_AREA_SIZE,
};
use hv_core::svm::{event, exit};

const UAPI_SVM_H: &str = "arch/x86/include/uapi/asm/svm.h";
const SVM_H: &str = "arch/x86/include/asm/svm.h";
const MSR_INDEX_H: &str = "arch/x86/include/asm/msr-index.h";
const HYPERV_TLFS_H: &str = "arch/x86/include/asm/hyperv-tlfs.h";
const KVM_SVM_H: &str = "arch/x86/kvm/svm/svm.h";

/// Single-line defines copied into the C program: (header, name).  x86's
/// kvm_host.h comes before the generic one so its values win, as in the
/// kernel (the generic one only supplies defaults under `#ifndef`).
const EXTRACTED_DEFINES: [(&str, &str); 9] = [
    ("include/uapi/linux/kvm.h", "KVM_MEM_LOG_DIRTY_PAGES"),
    ("include/uapi/linux/kvm.h", "KVM_MEM_READONLY"),
    ("include/uapi/linux/kvm.h", "KVM_MEM_GUEST_MEMFD"),
    ("arch/x86/include/asm/kvm_host.h", "KVM_INTERNAL_MEM_SLOTS"),
    ("arch/x86/include/asm/kvm_host.h", "KVM_MAX_CPUID_ENTRIES"),
    ("include/linux/kvm_host.h", "KVM_MEM_SLOTS_NUM"),
    ("include/linux/kvm_host.h", "KVM_USER_MEM_SLOTS"),
    ("include/linux/kvm_host.h", "KVM_MEM_MAX_NR_PAGES"),
    (
        "arch/x86/include/uapi/asm/kvm.h",
        "KVM_CPUID_FLAG_SIGNIFCANT_INDEX",
    ),
];

/// The `#define NAME ...` line of `name` in `text` (one line; none of the
/// extracted defines continues).
fn define_line(text: &str, name: &str) -> String {
    text.lines()
        .find(|line| {
            let rest = line.trim_start();
            let Some(rest) = rest.strip_prefix('#') else {
                return false;
            };
            let Some(rest) = rest.trim_start().strip_prefix("define") else {
                return false;
            };
            identifier_at(rest.trim_start()) == name
        })
        .unwrap_or_else(|| panic!("no #define {name}"))
        .trim_start()
        .to_string()
}

/// `#define`s of the two svm.h headers that hv-core does not mirror, by
/// name prefix, and why.  Everything else they define must be a crate
/// constant.
const OMITTED_DEFINE_PREFIXES: [(&str, &str); 11] = [
    (
        "SVM_VMGEXIT_",
        "SEV-ES GHCB software exit codes; pvrs runs no encrypted guests",
    ),
    ("SVM_EXIT_REASONS", "a name table for tracing, not a value"),
    (
        "SVM_SEV_FEAT_",
        "SEV-SNP VMSA features; no encrypted guests",
    ),
    (
        "SVM_TSC_RATIO_",
        "TSC scaling (TscRateMsr), absent on QEMU TCG and not used",
    ),
    (
        "AVIC_",
        "AVIC is absent on QEMU TCG and not used (AVIC_ENABLE_* is mirrored for int_ctl)",
    ),
    ("X2AVIC_", "AVIC, as above"),
    ("VMCB_AVIC_", "AVIC, as above"),
    ("GHCB_", "the SEV-ES guest-host communication block"),
    (
        "EXPECTED_",
        "the header's own size checks; compared below as sizes instead",
    ),
    (
        "BUILD_BUG_RESERVED_OFFSET",
        "a helper macro of the header's own offset checks",
    ),
    ("DEFINE_GHCB_ACCESSORS", "generates GHCB accessor functions"),
];

/// Names that a prefix above would omit but that hv-core mirrors.
const MIRRORED_DESPITE_PREFIX: [&str; 2] = ["AVIC_ENABLE_SHIFT", "AVIC_ENABLE_MASK"];

/// Structs of asm/svm.h with no Rust counterpart, and why.
const OMITTED_STRUCTS: [(&str, &str); 4] = [
    (
        "sev_es_save_area",
        "the SEV-ES/SNP VMSA; no encrypted guests",
    ),
    ("ghcb_save_area", "SEV-ES GHCB"),
    ("ghcb", "SEV-ES GHCB"),
    (
        "vmcb",
        "a union with the SEV-ES save area; hv-core's Vmcb is the whole page with the plain \
         save area (its `save` offset is compared)",
    ),
];

/// The `enum intercept_words` members: word indices, which hv-core
/// computes as `bit / 32`; `MAX_INTERCEPT` is compared with
/// `INTERCEPT_WORDS`.
const INTERCEPT_WORD_ENUMERATORS: [&str; 7] = [
    "INTERCEPT_CR",
    "INTERCEPT_DR",
    "INTERCEPT_EXCEPTION",
    "INTERCEPT_WORD3",
    "INTERCEPT_WORD4",
    "INTERCEPT_WORD5",
    "MAX_INTERCEPT",
];

fn kernel_source() -> PathBuf {
    let tree = match std::env::var_os("PVRS_KERNEL_SRC") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/pvrs/src/linux-source-6.12")
        }
    };
    for file in [UAPI_SVM_H, SVM_H, MSR_INDEX_H, HYPERV_TLFS_H, KVM_SVM_H] {
        assert!(
            tree.join(file).is_file(),
            "no {file} under {}: run `make kernel-source`, or point PVRS_KERNEL_SRC at a \
             Linux 6.12 tree",
            tree.display()
        );
    }
    tree
}

fn read(tree: &Path, file: &str) -> String {
    fs::read_to_string(tree.join(file)).unwrap_or_else(|error| panic!("reading {file}: {error}"))
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

fn defines_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start();
            let rest = rest.strip_prefix("define")?.trim_start();
            Some(identifier_at(rest).to_string())
        })
        .filter(|name| !name.starts_with('_'))
        .collect()
}

/// The text of the first `enum ... { ... };` whose body contains
/// `marker`, from `enum` to the closing `};`.
fn enum_containing(text: &str, marker: &str) -> String {
    let marker_at = text.find(marker).unwrap_or_else(|| panic!("no {marker}"));
    let start = text[..marker_at].rfind("enum").expect("enum keyword");
    let end = marker_at + text[marker_at..].find("};").expect("end of enum") + 2;
    text[start..end].to_string()
}

/// The enumerator names of an enum's text.
fn enumerators(enum_text: &str) -> Vec<String> {
    let body = &enum_text[enum_text.find('{').unwrap() + 1..enum_text.rfind('}').unwrap()];
    let mut without_comments = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("/*") {
        without_comments.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("closed comment") + start + 2;
        rest = &rest[end..];
    }
    without_comments.push_str(rest);
    without_comments
        .split(',')
        .map(|item| identifier_at(item.trim()).to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

fn structs_defined_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("struct ")?;
            let rest = rest
                .trim_start()
                .strip_prefix("__attribute__ ((__packed__))")
                .unwrap_or(rest)
                .trim_start();
            let name = identifier_at(rest);
            let after = rest[name.len()..].trim_start();
            (!name.is_empty() && after.starts_with('{')).then(|| name.to_string())
        })
        .collect()
}

/// Every named constant hv-core pins: name, value, bits of its type.
fn crate_constants() -> Vec<(&'static str, u64, u32)> {
    [
        vmcb::INTERCEPT_CONSTANTS,
        vmcb::CONTROL_CONSTANTS,
        clean::CLEAN_BIT_CONSTANTS,
        exit::EXIT_CODE_CONSTANTS,
        exit::EXIT_INFO_CONSTANTS,
        event::EVENT_CONSTANTS,
        hv_core::msr::MSR_CONSTANTS,
        hv_core::memslot::MEMSLOT_CONSTANTS,
        hv_core::cpuid::CPUID_CONSTANTS,
    ]
    .concat()
}

/// (C struct, C field, Rust offset, Rust size) of every field.
fn field_layouts() -> Vec<(&'static str, &'static str, usize, usize)> {
    fn size_of_return<S, T>(_: impl Fn(&S) -> T) -> usize {
        size_of::<T>()
    }
    macro_rules! fields {
        ($c_struct:literal, $rust:ty, [$($field:ident),+ $(,)?]) => {
            vec![$((
                $c_struct,
                stringify!($field),
                offset_of!($rust, $field),
                size_of_return(|value: &$rust| value.$field),
            )),+]
        };
    }
    [
        fields!("vmcb_seg", VmcbSegment, [selector, attrib, limit, base]),
        fields!(
            "vmcb_control_area",
            VmcbControlArea,
            [
                intercepts,
                reserved_1,
                pause_filter_thresh,
                pause_filter_count,
                iopm_base_pa,
                msrpm_base_pa,
                tsc_offset,
                asid,
                tlb_ctl,
                reserved_2,
                int_ctl,
                int_vector,
                int_state,
                reserved_3,
                exit_code,
                exit_code_hi,
                exit_info_1,
                exit_info_2,
                exit_int_info,
                exit_int_info_err,
                nested_ctl,
                avic_vapic_bar,
                ghcb_gpa,
                event_inj,
                event_inj_err,
                nested_cr3,
                virt_ext,
                clean,
                reserved_5,
                next_rip,
                insn_len,
                insn_bytes,
                avic_backing_page,
                reserved_6,
                avic_logical_id,
                avic_physical_id,
                reserved_7,
                vmsa_pa,
                reserved_8,
                reserved_sw,
            ]
        ),
        fields!(
            "vmcb_save_area",
            VmcbSaveArea,
            [
                es,
                cs,
                ss,
                ds,
                fs,
                gs,
                gdtr,
                ldtr,
                idtr,
                tr,
                reserved_0xa0,
                vmpl,
                cpl,
                reserved_0xcc,
                efer,
                reserved_0xd8,
                cr4,
                cr3,
                cr0,
                dr7,
                dr6,
                rflags,
                rip,
                reserved_0x180,
                rsp,
                s_cet,
                ssp,
                isst_addr,
                rax,
                star,
                lstar,
                cstar,
                sfmask,
                kernel_gs_base,
                sysenter_cs,
                sysenter_esp,
                sysenter_eip,
                cr2,
                reserved_0x248,
                g_pat,
                dbgctl,
                br_from,
                br_to,
                last_excp_from,
                last_excp_to,
                reserved_0x298,
                spec_ctrl,
            ]
        ),
    ]
    .concat()
}

/// The mirrored structs, their Rust sizes, and the field lists tile them.
#[test]
fn rust_field_lists_tile_their_structs() {
    let sizes = [
        ("vmcb_seg", size_of::<VmcbSegment>()),
        ("vmcb_control_area", size_of::<VmcbControlArea>()),
        ("vmcb_save_area", size_of::<VmcbSaveArea>()),
    ];
    let fields = field_layouts();
    for (c_struct, size) in sizes {
        let mut end = 0;
        for &(_, field, offset, field_size) in fields.iter().filter(|f| f.0 == c_struct) {
            assert_eq!(offset, end, "gap before {c_struct}.{field}");
            end = offset + field_size;
        }
        assert_eq!(end, size, "{c_struct} has unlisted trailing fields");
    }
}

struct Check {
    c_expression: String,
    expected: u64,
}

fn check(c_expression: impl Into<String>, expected: impl TryInto<u64>) -> Check {
    Check {
        c_expression: c_expression.into(),
        expected: expected.try_into().ok().expect("fits u64"),
    }
}

fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for (name, value, bits) in crate_constants() {
        if bits == 64 {
            checks.push(check(name, value));
            continue;
        }
        // The C value as the Rust type holds it (`1 << 31` is a negative
        // int, SVM_EXIT_ERR is -1)...
        checks.push(check(format!("(uint{bits}_t)({name})"), value));
        // ...and proof that the conversion dropped only sign bits.
        checks.push(check(
            format!(
                "(long long)({name}) == (long long)(uint{bits}_t)({name}) || \
                 (long long)({name}) == (long long)(int{bits}_t)({name})"
            ),
            1u8,
        ));
    }
    for (c_struct, field, offset, size) in field_layouts() {
        checks.push(check(
            format!("offsetof(struct {c_struct}, {field})"),
            offset,
        ));
        checks.push(check(
            format!("sizeof(((struct {c_struct} *)0)->{field})"),
            size,
        ));
    }
    checks.extend([
        check("sizeof(struct vmcb_seg)", size_of::<VmcbSegment>()),
        check(
            "sizeof(struct vmcb_control_area)",
            size_of::<VmcbControlArea>(),
        ),
        check("sizeof(struct vmcb_save_area)", size_of::<VmcbSaveArea>()),
        check("offsetof(struct vmcb, save)", offset_of!(Vmcb, save)),
        check("EXPECTED_VMCB_CONTROL_AREA_SIZE", VMCB_CONTROL_AREA_SIZE),
        check("EXPECTED_VMCB_SAVE_AREA_SIZE", VMCB_SAVE_AREA_SIZE),
        check("MAX_INTERCEPT", INTERCEPT_WORDS),
        check("PAGE_SIZE >= sizeof(struct vmcb)", 1u8),
    ]);
    checks
}

fn c_include(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    let path = path.to_str().expect("UTF-8 kernel path");
    assert!(!path.contains(['"', '\\', '\n']), "unusual path {path:?}");
    format!("#include \"{path}\"\n")
}

/// The shim headers described in the module docs.
fn write_shim_headers(dir: &Path, tree: &Path) {
    for sub in ["uapi/asm", "asm", "linux"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::write(dir.join("uapi/asm/svm.h"), c_include(tree, UAPI_SVM_H)).unwrap();
    fs::write(
        dir.join("uapi/asm/kvm.h"),
        "/* svm.h uses nothing of it */\n",
    )
    .unwrap();
    fs::write(
        dir.join("linux/bits.h"),
        "/* BIT() and friends: see the prelude */\n",
    )
    .unwrap();
    let hyperv = read(tree, HYPERV_TLFS_H);
    let start = hyperv
        .find("struct hv_vmcb_enlightenments {")
        .expect("struct hv_vmcb_enlightenments in hyperv-tlfs.h");
    let end = start + hyperv[start..].find("} __packed;").expect("its end") + "} __packed;".len();
    fs::write(
        dir.join("asm/hyperv-tlfs.h"),
        format!(
            "/* Extracted from {HYPERV_TLFS_H}. */\n{}\n",
            &hyperv[start..end]
        ),
    )
    .unwrap();
}

fn c_program(tree: &Path, checks: &[Check]) -> String {
    let mut program = String::from(
        "#include <assert.h>\n\
         #include <limits.h>\n\
         #include <stdbool.h>\n\
         #include <stddef.h>\n\
         #include <stdint.h>\n\
         #include <stdio.h>\n\
         \n\
         typedef uint8_t u8;\n\
         typedef uint16_t u16;\n\
         typedef uint32_t u32;\n\
         typedef uint64_t u64;\n\
         #define __packed __attribute__((__packed__))\n\
         #define BIT(n) (1UL << (n))\n\
         #define BIT_ULL(n) (1ULL << (n))\n\
         #define GENMASK(h, l) (((~0UL) << (l)) & (~0UL >> (63 - (h))))\n\
         #define GENMASK_ULL(h, l) (((~0ULL) << (l)) & (~0ULL >> (63 - (h))))\n\
         #define PAGE_SIZE 4096\n\
         #define X86_CR0_MP (1UL << 1)\n\
         #define X86_CR0_TS (1UL << 3)\n\
         #define BUILD_BUG_ON(condition) _Static_assert(!(condition), #condition)\n\
         #define ASSERT_STRUCT_OFFSET(type, field, offset) \\\n\
         \t_Static_assert(offsetof(type, field) == (offset), #field)\n\
         #define test_bit(bit, address) ((void)(address), 0)\n\
         #define __set_bit(bit, address) ((void)(address))\n\
         \n",
    );
    for file in [UAPI_SVM_H, SVM_H, MSR_INDEX_H] {
        program.push_str(&c_include(tree, file));
    }
    for (header, name) in EXTRACTED_DEFINES {
        writeln!(
            program,
            "/* From {header}. */\n{}",
            define_line(&read(tree, header), name)
        )
        .unwrap();
    }
    writeln!(
        program,
        "\n/* Extracted from {KVM_SVM_H}. */\n{}\n",
        enum_containing(&read(tree, KVM_SVM_H), "VMCB_INTERCEPTS")
    )
    .unwrap();
    program.push_str("int main(void)\n{\n\t__unused_size_checks();\n");
    for (index, check) in checks.iter().enumerate() {
        writeln!(
            program,
            "\tprintf(\"{index} %llu\\n\", (unsigned long long)({}));",
            check.c_expression
        )
        .unwrap();
    }
    program.push_str("\treturn 0;\n}\n");
    program
}

#[test]
fn values_and_layouts_match_the_c_compiler() {
    let tree = kernel_source();
    let checks = checks();
    let work = std::env::temp_dir().join(format!("hv-core-svm-header-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let shim = work.join("include");
    write_shim_headers(&shim, &tree);
    let source = work.join("svm_values.c");
    let binary = work.join("svm_values");
    fs::write(&source, c_program(&tree, &checks)).unwrap();

    let compiled = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Wno-unused-function", "-I"])
        .arg(&shim)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("running the C compiler `cc`");
    assert!(
        compiled.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary)
        .output()
        .expect("running the C program");
    assert!(ran.status.success());
    let stdout = String::from_utf8(ran.stdout).unwrap();
    let _ = fs::remove_dir_all(&work);

    let mut seen = vec![false; checks.len()];
    let mut mismatches = Vec::new();
    for line in stdout.lines() {
        let (index, value) = line.split_once(' ').unwrap();
        let index: usize = index.parse().unwrap();
        let value: u64 = value.parse().unwrap();
        seen[index] = true;
        if value != checks[index].expected {
            mismatches.push(format!(
                "{}: C says {value:#x}, hv-core says {:#x}",
                checks[index].c_expression, checks[index].expected
            ));
        }
    }
    assert!(
        seen.iter().all(|&seen| seen),
        "the C program skipped values"
    );
    assert!(
        mismatches.is_empty(),
        "hv-core disagrees with Linux:\n{}",
        mismatches.join("\n")
    );
    println!("compared {} values with Linux 6.12", checks.len());
}

/// Every define of both svm.h headers is mirrored or deliberately
/// omitted, every mirrored name exists, and the intercept and clean-bit
/// enums are mirrored completely.
#[test]
fn nothing_in_scope_is_forgotten() {
    let tree = kernel_source();
    let constants: BTreeSet<&str> = crate_constants().iter().map(|c| c.0).collect();
    assert_eq!(
        constants.len(),
        crate_constants().len(),
        "a name is listed twice"
    );

    let is_omitted = |name: &str| {
        !MIRRORED_DESPITE_PREFIX.contains(&name)
            && OMITTED_DEFINE_PREFIXES
                .iter()
                .any(|(prefix, _)| name.starts_with(prefix))
    };
    let svm_h = read(&tree, SVM_H);
    let defines: Vec<String> = [read(&tree, UAPI_SVM_H), svm_h.clone()]
        .iter()
        .flat_map(|text| defines_in(text))
        .collect();
    let missing: Vec<&String> = defines
        .iter()
        .filter(|name| !constants.contains(name.as_str()) && !is_omitted(name))
        .collect();
    assert!(
        missing.is_empty(),
        "svm.h defines not in hv-core: {missing:?}"
    );
    for (prefix, _reason) in OMITTED_DEFINE_PREFIXES {
        assert!(
            defines.iter().any(|name| name.starts_with(prefix)),
            "no define starts with {prefix} any more: drop the omission"
        );
    }

    let intercept_enum = enum_containing(&svm_h, "INTERCEPT_CR0_READ");
    let word_enum = enum_containing(&svm_h, "INTERCEPT_WORD3");
    let mut enum_names = enumerators(&intercept_enum);
    assert!(
        enum_names.len() > 80,
        "the intercept enum scan found too little"
    );
    enum_names.extend(enumerators(&word_enum));
    let unmirrored: Vec<&String> = enum_names
        .iter()
        .filter(|name| {
            !constants.contains(name.as_str())
                && !INTERCEPT_WORD_ENUMERATORS.contains(&name.as_str())
        })
        .collect();
    assert!(
        unmirrored.is_empty(),
        "intercepts not in hv-core: {unmirrored:?}"
    );

    let clean_enum = enumerators(&enum_containing(&read(&tree, KVM_SVM_H), "VMCB_INTERCEPTS"));
    let clean_names: BTreeSet<&str> = clean::CLEAN_BIT_CONSTANTS.iter().map(|c| c.0).collect();
    assert_eq!(
        clean_enum
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        clean_names
    );

    // Every crate name is a define or enumerator of the headers (the
    // msr-index.h names and the extracted defines are checked by the C
    // compiler alone: a missing name does not compile).
    let msr_names: BTreeSet<&str> = hv_core::msr::MSR_CONSTANTS
        .iter()
        .map(|c| c.0)
        .chain(EXTRACTED_DEFINES.iter().map(|(_, name)| *name))
        .collect();
    let known: BTreeSet<&str> = defines
        .iter()
        .chain(&enum_names)
        .chain(&clean_enum)
        .map(String::as_str)
        .chain(msr_names)
        .collect();
    let invented: Vec<&&str> = constants
        .iter()
        .filter(|name| !known.contains(**name))
        .collect();
    assert!(invented.is_empty(), "not in the headers: {invented:?}");

    let structs: BTreeSet<String> = structs_defined_in(&svm_h).into_iter().collect();
    let covered: BTreeSet<String> = ["vmcb_seg", "vmcb_control_area", "vmcb_save_area"]
        .iter()
        .map(|name| name.to_string())
        .chain(OMITTED_STRUCTS.iter().map(|(name, _)| name.to_string()))
        .collect();
    assert_eq!(structs, covered, "svm.h's structs changed");
}
