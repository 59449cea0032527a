/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The world switch of pvrs_kvm (AMD64 APM vol. 2, 15.5 "VMRUN Instruction",
 * 15.6 "#VMEXIT", 15.5.2 "VMSAVE and VMLOAD Instructions").
 *
 * void pvrs_svm_vmrun(u64 vmcb_pa, struct GuestGprs *gprs, u64 host_vmsave_pa)
 *
 * Called with GIF=0 and IF=1 (svm_hw.rs run_guest). VMRUN switches RAX,
 * RSP, RIP, RFLAGS, the segment registers, control registers, EFER and
 * DR6/DR7; the other general-purpose registers are ours to switch, and
 * VMSAVE/VMLOAD switch the state VMRUN leaves alone (FS, GS and their bases,
 * TR, LDTR, KernelGsBase, the SYSCALL and SYSENTER MSRs). The host's copy of
 * that state is saved before VMRUN and loaded back right after the guest's
 * is saved, while GIF still holds off every interrupt and NMI: no host code
 * may run with the guest's GS base or TR.
 *
 * GuestGprs is 16 quadwords indexed by register number (RAX = 0 ... R15 =
 * 15); the RAX and RSP slots are unused (they live in the VMCB).
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>

#define GPR(n)	(8 * (n))

.section .text, "ax"

SYM_FUNC_START(pvrs_svm_vmrun)
	push	%rbp
	mov	%rsp, %rbp
	push	%r15
	push	%r14
	push	%r13
	push	%r12
	push	%rbx

	/* What is needed after VMRUN, when every GPR holds guest state. */
	push	%rdx			/* 16(%rsp): host VMSAVE area */
	push	%rsi			/*  8(%rsp): GuestGprs */
	push	%rdi			/*  0(%rsp): VMCB */

	/* The host's FS/GS/TR/LDTR/syscall state, reloaded after the exit. */
	mov	%rdx, %rax
	vmsave	%rax

	/* The guest's GPRs; RAX (the VMCB address) goes last. */
	mov	%rsi, %rax
	mov	GPR(1)(%rax), %rcx
	mov	GPR(2)(%rax), %rdx
	mov	GPR(3)(%rax), %rbx
	mov	GPR(5)(%rax), %rbp
	mov	GPR(6)(%rax), %rsi
	mov	GPR(7)(%rax), %rdi
	mov	GPR(8)(%rax), %r8
	mov	GPR(9)(%rax), %r9
	mov	GPR(10)(%rax), %r10
	mov	GPR(11)(%rax), %r11
	mov	GPR(12)(%rax), %r12
	mov	GPR(13)(%rax), %r13
	mov	GPR(14)(%rax), %r14
	mov	GPR(15)(%rax), %r15
	mov	(%rsp), %rax

	vmload	%rax
	vmrun	%rax
	/* #VMEXIT: RSP and RAX are the host's again (RAX = the VMCB). */
	vmsave	%rax

	mov	8(%rsp), %rax
	mov	%rcx, GPR(1)(%rax)
	mov	%rdx, GPR(2)(%rax)
	mov	%rbx, GPR(3)(%rax)
	mov	%rbp, GPR(5)(%rax)
	mov	%rsi, GPR(6)(%rax)
	mov	%rdi, GPR(7)(%rax)
	mov	%r8, GPR(8)(%rax)
	mov	%r9, GPR(9)(%rax)
	mov	%r10, GPR(10)(%rax)
	mov	%r11, GPR(11)(%rax)
	mov	%r12, GPR(12)(%rax)
	mov	%r13, GPR(13)(%rax)
	mov	%r14, GPR(14)(%rax)
	mov	%r15, GPR(15)(%rax)

	mov	16(%rsp), %rax
	vmload	%rax

	/*
	 * Guest values must not linger in registers that the host's
	 * speculative execution could use (as KVM's vmenter.S does).
	 */
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d

	add	$24, %rsp
	pop	%rbx
	pop	%r12
	pop	%r13
	pop	%r14
	pop	%r15
	pop	%rbp
	RET
SYM_FUNC_END(pvrs_svm_vmrun)
