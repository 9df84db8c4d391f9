# Console input: prints "ready", then echoes every byte received on COM1 (polling the line
# status register from ring 3) until it gets 'q', then resets.
    .include "common.inc"
user_main:
    lea msg(%rip), %rsi
    call puts
1:  mov $0x3fd, %dx
    inb %dx, %al
    test $1, %al
    jz 1b
    mov $0x3f8, %dx
    inb %dx, %al
    outb %al, %dx
    cmp $'q', %al
    jne 1b
    jmp reset
msg:
    .asciz "ready\n"
