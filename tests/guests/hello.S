# Prints from ring 3, writes the boot-time marker, then resets through the i8042.
    .include "common.inc"
user_main:
    lea msg(%rip), %rsi
    call puts
    call boot_marker
    jmp reset
msg:
    .asciz "hello from ring 3\n"
