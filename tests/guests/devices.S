# Exercises device routing from ring 3:
#   PIO port 0x510: write 'P', read one byte back and print it.
#   MMIO slot 0 (0xc0001000): 32-bit write of 0x4d4d4d4d at +8, 32-bit read at +4, print low byte.
#   QueueNotify (+0x50): write queue index 0, then 1 (KVM ioeventfds, never reach the device).
# Then prints "done" and resets.
    .include "common.inc"
user_main:
    mov $0x510, %dx
    mov $'P', %al
    outb %al, %dx
    inb %dx, %al
    call putc
    mov $0xc0001000, %edi
    movl $0x4d4d4d4d, 8(%rdi)
    movl 4(%rdi), %eax
    call putc
    movl $0, 0x50(%rdi)
    movl $1, 0x50(%rdi)
    lea msg(%rip), %rsi
    call puts
    jmp reset
msg:
    .asciz "\ndone\n"
