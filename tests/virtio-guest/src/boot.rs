//! The PVH entry point and the switch to 64-bit mode.
//!
//! PVH (Xen's `docs/misc/pvh.pandoc`, as Linux's `CONFIG_PVH` uses it):
//! the VMM finds the 32-bit entry in an ELF note of type
//! `XEN_ELFNOTE_PHYS32_ENTRY` (18) named "Xen", and starts the boot vCPU
//! there in flat 32-bit protected mode with paging off and `ebx` = the
//! physical address of `struct hvm_start_info`. pvrs-vmm enters any ELF
//! image this way, so this guest needs no special VMM support.
//!
//! The stub builds an identity map of the first 4 GiB with 2 MiB pages
//! (the virtio-mmio windows sit at 0xd000_0000), enables PAE, long mode
//! (EFER.LME) and paging, loads a 64-bit GDT and calls
//! `guest_main(start_info)`. Only plain instructions are used: the
//! software KVM of the test machines cannot emulate everything (see
//! ../shared/notes/ENVIRONMENT.md).

use core::arch::global_asm;

global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .p2align 2
    .long 4                     /* n_namesz: "Xen\0" */
    .long 4                     /* n_descsz: a 32-bit address */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov $boot_stack_top, %esp

    /* 4 page directories: 2048 entries of 2 MiB, present + writable + PS. */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b
    /* PDPT[0..4] -> the directories; PML4[0] -> the PDPT. The other
       entries are zero: guest memory starts zeroed. */
    mov $boot_pdpt, %edi
    mov $(boot_pd + 3), %eax
    mov %eax, 0(%edi)
    add $4096, %eax
    mov %eax, 8(%edi)
    add $4096, %eax
    mov %eax, 16(%edi)
    add $4096, %eax
    mov %eax, 24(%edi)
    mov $(boot_pdpt + 3), %eax
    mov %eax, boot_pml4

    mov %cr4, %eax
    or $0x20, %eax              /* CR4.PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx       /* IA32_EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax        /* PG | PE */
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $2f

    .code64
2:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %ebx, %edi              /* guest_main(start_info) */
    call guest_main
3:  hlt
    jmp 3b

    .section .rodata
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .skip 64 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);
