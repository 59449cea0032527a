//! Checks `pvrs_abi` against the Linux 6.12 headers it mirrors.
//!
//! No number is typed in here.  The crate's `LINUX_CONSTANTS` tables (built
//! by the same macro that defines the constants) and the layouts the Rust
//! compiler computes are compared with what a C compiler computes from the
//! real headers: the test writes a C program that includes them by path,
//! prints every value, and compares the output.  A text scan of the headers
//! makes sure that no `#define` and no struct is left out.
//!
//! The kernel tree comes from `PVRS_KERNEL_SRC`, by default
//! `$HOME/.cache/pvrs/src/linux-source-6.12`.  Nothing is built or written
//! in it (another build may be using it); the C program lives in a
//! temporary directory.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::mem::{align_of, offset_of, size_of, size_of_val};
use std::path::{Path, PathBuf};
use std::process::Command;

use pvrs_abi::hypercall::{
    KvmClockPairing, KvmMmuOpFlushTlb, KvmMmuOpHeader, KvmMmuOpReleasePt, KvmMmuOpWritePte,
};
use pvrs_abi::msr::KvmVcpuPvApfData;
use pvrs_abi::pvclock::{PvclockVcpuTimeInfo, PvclockWallClock};
use pvrs_abi::steal_time::KvmStealTime;
use pvrs_abi::{cpuid, hypercall, msr, pvclock, steal_time};

/// The headers the crate mirrors, relative to the kernel tree.  Every
/// `#define` and struct in them must be covered.
const MIRRORED_HEADERS: [&str; 3] = [
    "include/uapi/linux/kvm_para.h",
    "arch/x86/include/uapi/asm/kvm_para.h",
    "arch/x86/include/asm/pvclock-abi.h",
];

/// The kernel-internal header whose `for_each_possible_hypervisor_cpuid_base`
/// loop the crate's hypervisor leaf search mirrors.
const CPUID_HEADER: &str = "arch/x86/include/asm/cpuid.h";

/// Defines that are not plain numbers and so are not in the constant
/// tables; `c_program_checks` covers each of them in its own way.
const SPECIAL_DEFINES: [&str; 2] = ["KVM_SIGNATURE", "KVM_MAP_GPA_RANGE_ENC_STAT"];

fn kernel_source() -> PathBuf {
    let tree = match std::env::var_os("PVRS_KERNEL_SRC") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/pvrs/src/linux-source-6.12")
        }
    };
    let missing: Vec<_> = MIRRORED_HEADERS
        .iter()
        .chain([&CPUID_HEADER, &"Makefile"])
        .filter(|file| !tree.join(file).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the Linux 6.12 source tree is missing or incomplete at {} (lacks {missing:?}): \
         run `make kernel-source`, or point PVRS_KERNEL_SRC at an extracted linux-6.12 tree",
        tree.display()
    );
    tree
}

fn read(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Every constant table of the crate, in one list.
fn crate_constants() -> Vec<(&'static str, u64)> {
    [
        cpuid::LINUX_CONSTANTS,
        hypercall::LINUX_CONSTANTS,
        msr::LINUX_CONSTANTS,
        pvclock::LINUX_CONSTANTS,
        steal_time::LINUX_CONSTANTS,
    ]
    .concat()
}

/// A `#define` found in a header: its name and whether it takes arguments.
struct Define {
    name: String,
    is_function_like: bool,
}

fn identifier_len(text: &str) -> usize {
    text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len())
}

fn defines_in(text: &str) -> Vec<Define> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start();
            let rest = rest.strip_prefix("define")?.trim_start();
            let (name, after_name) = rest.split_at(identifier_len(rest));
            Some(Define {
                name: name.to_string(),
                is_function_like: after_name.starts_with('('),
            })
        })
        .collect()
}

/// Names of the structs *defined* (not just used) in a header.
fn structs_defined_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("struct ")?.trim_start();
            let (name, after_name) = rest.split_at(identifier_len(rest));
            after_name
                .trim_start()
                .starts_with('{')
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn kernel_source_is_linux_6_12() {
    let makefile = read(&kernel_source(), "Makefile");
    let variable = |name: &str| {
        makefile
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim)
            })
            .unwrap_or_else(|| panic!("no {name} in the kernel Makefile"))
            .to_string()
    };
    assert_eq!(
        (
            variable("VERSION").as_str(),
            variable("PATCHLEVEL").as_str()
        ),
        ("6", "12"),
        "the ABI is pinned to Linux 6.12 headers"
    );
}

/// Completeness in both directions: every numeric `#define` of the
/// mirrored headers is a crate constant of the same name, and every crate
/// constant is defined there.  This covers in particular every
/// `KVM_FEATURE_*`, `KVM_HINTS_*`, `KVM_HC_*` and `MSR_KVM_*`.
#[test]
fn every_header_define_is_a_crate_constant() {
    let tree = kernel_source();
    let defines: Vec<Define> = MIRRORED_HEADERS
        .iter()
        .flat_map(|header| defines_in(&read(&tree, header)))
        // Leading underscores mark include guards.
        .filter(|define| !define.name.starts_with('_'))
        .collect();
    let constants: BTreeSet<&str> = crate_constants().iter().map(|&(name, _)| name).collect();
    assert_eq!(
        constants.len(),
        crate_constants().len(),
        "a constant is listed twice"
    );

    let missing: Vec<&str> = defines
        .iter()
        .filter(|define| {
            !constants.contains(define.name.as_str())
                && !SPECIAL_DEFINES.contains(&define.name.as_str())
        })
        .map(|define| define.name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "defined in the headers but not in pvrs_abi: {missing:?}"
    );

    for define in &defines {
        assert_eq!(
            define.is_function_like,
            define.name == "KVM_MAP_GPA_RANGE_ENC_STAT",
            "{} changed between plain and function-like",
            define.name
        );
    }

    let header_names: BTreeSet<&str> = defines.iter().map(|define| define.name.as_str()).collect();
    let invented: Vec<&&str> = constants
        .iter()
        .filter(|name| !header_names.contains(**name))
        .collect();
    assert!(
        invented.is_empty(),
        "in pvrs_abi's tables but not in the headers: {invented:?}"
    );

    for prefix in ["KVM_FEATURE_", "KVM_HINTS_", "KVM_HC_", "MSR_KVM_"] {
        assert!(
            header_names.iter().any(|name| name.starts_with(prefix)),
            "the scan found no {prefix} names: has the header format changed?"
        );
    }
}

/// One struct's layout as Rust computes it, to compare with C.
struct StructLayout {
    c_name: &'static str,
    /// C declares it `__packed` (alignment 1); the Rust type instead has the
    /// same size and offsets with natural alignment.
    c_packed: bool,
    size: usize,
    align: usize,
    /// (name, offset, size) of every field, in declaration order.
    fields: Vec<(&'static str, usize, usize)>,
}

macro_rules! layout {
    ($rust:ty, $c_name:literal, c_packed: $packed:literal, [$($field:ident),+ $(,)?]) => {{
        let value = <$rust>::default();
        StructLayout {
            c_name: $c_name,
            c_packed: $packed,
            size: size_of::<$rust>(),
            align: align_of::<$rust>(),
            fields: vec![$((stringify!($field), offset_of!($rust, $field), size_of_val(&value.$field))),+],
        }
    }};
}

fn crate_layouts() -> Vec<StructLayout> {
    vec![
        layout!(PvclockVcpuTimeInfo, "pvclock_vcpu_time_info", c_packed: true, [
            version, pad0, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags, pad,
        ]),
        layout!(PvclockWallClock, "pvclock_wall_clock", c_packed: true, [version, sec, nsec]),
        layout!(KvmStealTime, "kvm_steal_time", c_packed: false, [
            steal, version, flags, preempted, u8_pad, pad,
        ]),
        layout!(KvmClockPairing, "kvm_clock_pairing", c_packed: false, [sec, nsec, tsc, flags, pad]),
        layout!(KvmVcpuPvApfData, "kvm_vcpu_pv_apf_data", c_packed: false, [flags, token, pad]),
        layout!(KvmMmuOpHeader, "kvm_mmu_op_header", c_packed: false, [op, pad]),
        layout!(KvmMmuOpWritePte, "kvm_mmu_op_write_pte", c_packed: false, [header, pte_phys, pte_val]),
        layout!(KvmMmuOpFlushTlb, "kvm_mmu_op_flush_tlb", c_packed: false, [header]),
        layout!(KvmMmuOpReleasePt, "kvm_mmu_op_release_pt", c_packed: false, [header, pt_phys]),
    ]
}

/// Every struct of the mirrored headers has a Rust layout listed above, and
/// every listed field set tiles its struct without gaps.  Together with the
/// C comparison of each size and offset, that proves no C field is missing.
#[test]
fn every_header_struct_is_mirrored_completely() {
    let tree = kernel_source();
    let header_structs: BTreeSet<String> = MIRRORED_HEADERS
        .iter()
        .flat_map(|header| structs_defined_in(&read(&tree, header)))
        .collect();
    let layouts = crate_layouts();
    let mirrored: BTreeSet<String> = layouts
        .iter()
        .map(|layout| layout.c_name.to_string())
        .collect();
    assert_eq!(header_structs, mirrored);

    for layout in &layouts {
        let mut end = 0;
        for &(field, offset, size) in &layout.fields {
            assert_eq!(
                offset, end,
                "gap or reordering before {}.{field}",
                layout.c_name
            );
            end = offset + size;
        }
        assert_eq!(end, layout.size, "padding at the end of {}", layout.c_name);
    }
}

/// One value that the C program prints: a C expression and what the crate
/// says it is.
struct Check {
    c_expression: String,
    expected: u64,
}

fn check(c_expression: impl Into<String>, expected: impl TryInto<u64>) -> Check {
    Check {
        c_expression: c_expression.into(),
        expected: expected.try_into().ok().expect("expected value fits u64"),
    }
}

fn c_program_checks() -> Vec<Check> {
    let mut checks: Vec<Check> = crate_constants()
        .into_iter()
        .map(|(name, value)| check(name, value))
        .collect();

    for status in [0, 1] {
        checks.push(check(
            format!("KVM_MAP_GPA_RANGE_ENC_STAT({status})"),
            hypercall::map_gpa_range_enc_stat(status),
        ));
    }

    checks.push(check(
        "sizeof(KVM_SIGNATURE) - 1",
        cpuid::KVM_SIGNATURE.len(),
    ));
    for (index, &byte) in cpuid::KVM_SIGNATURE.iter().enumerate() {
        checks.push(check(
            format!("(unsigned char)KVM_SIGNATURE[{index}]"),
            byte,
        ));
    }
    for (register, value) in [
        cpuid::KVM_SIGNATURE_EBX,
        cpuid::KVM_SIGNATURE_ECX,
        cpuid::KVM_SIGNATURE_EDX,
    ]
    .into_iter()
    .enumerate()
    {
        checks.push(check(format!("signature_register({register})"), value));
    }

    let bases: Vec<u32> = cpuid::hypervisor_cpuid_bases().collect();
    checks.push(check("hypervisor_base_count()", bases.len()));
    checks.push(check("hypervisor_base_first()", bases[0]));
    checks.push(check("hypervisor_base_last()", *bases.last().unwrap()));
    checks.push(check(
        "hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_FIRST,
    ));
    checks.push(check(
        "hypervisor_base_second() - hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_STEP,
    ));
    checks.push(check(
        "hypervisor_base_last() + hypervisor_base_second() - hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_END,
    ));

    for layout in crate_layouts() {
        let c_type = format!("struct {}", layout.c_name);
        checks.push(check(format!("sizeof({c_type})"), layout.size));
        let c_align = if layout.c_packed { 1 } else { layout.align };
        checks.push(check(format!("_Alignof({c_type})"), c_align));
        for (field, offset, size) in layout.fields {
            checks.push(check(format!("offsetof({c_type}, {field})"), offset));
            checks.push(check(format!("sizeof((({c_type} *)0)->{field})"), size));
        }
    }
    checks
}

/// A directory under the system temporary directory, unique to this
/// process and test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pvrs-abi-{purpose}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("creating the temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The `#define for_each_possible_hypervisor_cpuid_base(...)` macro, with
/// its continuation lines, copied out of `cpuid.h` (which cannot be
/// included outside the kernel).
fn hypervisor_base_loop_macro(cpuid_h: &str) -> String {
    let mut lines = cpuid_h.lines().skip_while(|line| {
        !line
            .trim_start()
            .starts_with("#define for_each_possible_hypervisor_cpuid_base(")
    });
    let mut text = String::new();
    for line in lines.by_ref() {
        text.push_str(line);
        text.push('\n');
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    assert!(
        !text.is_empty(),
        "no for_each_possible_hypervisor_cpuid_base in {CPUID_HEADER}"
    );
    text
}

fn c_include(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    let path = path.to_str().expect("kernel path is UTF-8");
    assert!(
        !path.contains(['"', '\\', '\n']),
        "unusual kernel path {path:?}"
    );
    format!("#include \"{path}\"\n")
}

fn c_program(tree: &Path, checks: &[Check]) -> String {
    let mut program = String::from(
        "#include <stddef.h>\n\
         #include <stdint.h>\n\
         #include <stdio.h>\n\
         #include <string.h>\n\
         \n\
         /* The kernel's internal fixed-width types, for pvclock-abi.h. */\n\
         typedef uint8_t u8;\n\
         typedef int8_t s8;\n\
         typedef uint16_t u16;\n\
         typedef int16_t s16;\n\
         typedef uint32_t u32;\n\
         typedef int32_t s32;\n\
         typedef uint64_t u64;\n\
         typedef int64_t s64;\n\
         \n\
         /* What asm/bitsperlong.h says on x86-64; __GENMASK needs it. */\n\
         #define __BITS_PER_LONG 64\n\
         #define __BITS_PER_LONG_LONG 64\n\
         _Static_assert(sizeof(long) * 8 == __BITS_PER_LONG, \"x86-64 host expected\");\n\
         \n",
    );
    // const.h and bits.h provide __GENMASK, which kvm_para.h uses without
    // including; errno-base.h provides the errno values KVM_E* alias.
    for file in [
        "include/uapi/linux/const.h",
        "include/uapi/linux/bits.h",
        "include/uapi/asm-generic/errno-base.h",
        "include/uapi/linux/kvm_para.h",
        "arch/x86/include/asm/pvclock-abi.h",
    ] {
        program.push_str(&c_include(tree, file));
    }
    program.push('\n');
    program.push_str(&hypervisor_base_loop_macro(&read(tree, CPUID_HEADER)));
    program.push_str(
        "\n\
         static unsigned long long signature_register(int index)\n\
         {\n\
         \tuint32_t registers[3];\n\
         \tmemcpy(registers, KVM_SIGNATURE, sizeof(registers));\n\
         \treturn registers[index];\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_count(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tunsigned long long count = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tcount++;\n\
         \treturn count;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_first(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\treturn base;\n\
         \treturn 0;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_second(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tint seen = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tif (seen++ == 1)\n\
         \t\t\treturn base;\n\
         \treturn 0;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_last(void)\n\
         {\n\
         \tuint32_t base, last = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tlast = base;\n\
         \treturn last;\n\
         }\n\
         \n\
         int main(void)\n\
         {\n",
    );
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

/// The stand-ins for the two headers the kvm_para.h headers include by
/// `<...>`: `linux/types.h` (whose real version needs generated headers)
/// and `asm/kvm_para.h` (forwarded to the x86 uapi one, so that no kernel
/// directory is put on the include path where it could shadow libc's).
fn write_include_stubs(dir: &Path, tree: &Path) {
    fs::create_dir_all(dir.join("linux")).unwrap();
    fs::create_dir_all(dir.join("asm")).unwrap();
    fs::write(
        dir.join("linux/types.h"),
        "#ifndef PVRS_STUB_LINUX_TYPES_H\n\
         #define PVRS_STUB_LINUX_TYPES_H\n\
         /* As asm-generic/int-ll64.h defines them for x86-64. */\n\
         typedef unsigned char __u8;\n\
         typedef signed char __s8;\n\
         typedef unsigned short __u16;\n\
         typedef signed short __s16;\n\
         typedef unsigned int __u32;\n\
         typedef signed int __s32;\n\
         typedef unsigned long long __u64;\n\
         typedef signed long long __s64;\n\
         #define __aligned_u64 __u64 __attribute__((aligned(8)))\n\
         #endif\n",
    )
    .unwrap();
    fs::write(
        dir.join("asm/kvm_para.h"),
        c_include(tree, "arch/x86/include/uapi/asm/kvm_para.h"),
    )
    .unwrap();
}

#[test]
fn constants_and_layouts_match_the_c_compiler() {
    let tree = kernel_source();
    let checks = c_program_checks();
    let work = TempDir::new("kernel-headers");
    let stubs = work.0.join("include");
    write_include_stubs(&stubs, &tree);
    let source = work.0.join("abi_values.c");
    let binary = work.0.join("abi_values");
    fs::write(&source, c_program(&tree, &checks)).unwrap();

    let compiled = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-I"])
        .arg(&stubs)
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
        .expect("running the compiled C program");
    assert!(
        ran.status.success(),
        "the C program failed: {:?}",
        ran.status
    );
    let stdout = String::from_utf8(ran.stdout).expect("C output is ASCII");

    let mut seen = vec![false; checks.len()];
    let mut mismatches = Vec::new();
    for line in stdout.lines() {
        let (index, value) = line.split_once(' ').expect("`index value` lines");
        let index: usize = index.parse().unwrap();
        let value: u64 = value.parse().unwrap();
        let check = &checks[index];
        seen[index] = true;
        if value != check.expected {
            mismatches.push(format!(
                "{}: C says {value:#x}, pvrs_abi says {:#x}",
                check.c_expression, check.expected
            ));
        }
    }
    assert!(
        seen.iter().all(|&seen| seen),
        "the C program skipped some values"
    );
    assert!(
        mismatches.is_empty(),
        "pvrs_abi disagrees with Linux:\n{}",
        mismatches.join("\n")
    );

    let constants = crate_constants().len();
    println!(
        "compared {} values with the Linux headers: {constants} named constants and {} other \
         values (signature bytes and registers, function-like macro, hypervisor leaf range, \
         struct sizes, alignments, field offsets and field sizes)",
        checks.len(),
        checks.len() - constants
    );
}
