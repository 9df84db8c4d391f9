# Prints from ring 0, then halts with interrupts off: what Linux does for `poweroff -f` without
# ACPI. (A ring-3 `int` into a ring-0 handler does not work on nested PVM KVM, so this guest
# stays in ring 0; it runs about 150 instructions.)
    .code64
    .text
    .globl _start
_start:
    lea msg(%rip), %rsi
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  cli
3:  hlt
    jmp 3b
msg:
    .asciz "halting with interrupts off\n"
