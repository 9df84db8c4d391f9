# Watches a virtio-blk disk (MMIO slot 0) get a new backing file: reads sector 0 and the
# capacity, prints "a=<16 bytes> cap=CC" and "waiting", polls InterruptStatus until the
# configuration-change bit is set (the host swapped the file), acks it, reads sector 0 and the
# capacity again, prints "b=<16 bytes> cap=CC", then once more "c=<16 bytes> cap=CC" (so a
# rate limiter set meanwhile has two requests to hold back), "done", and resets. CC = capacity's low
# byte in hex (sectors).
    .include "common.inc"
    .include "virtio.inc"

    .set HDR, 0x600000
    .set DATA, 0x601000
    .set STATUS, 0x602000

# read0: ESI = first descriptor (uses ESI, ESI+1, ESI+2), EBX = used idx to wait for; reads
# sector 0 into DATA and prints 16 bytes of it and the capacity.
read0:
    push %rbx
    push %rsi
    movl $0, HDR
    movl $0, HDR+4
    movq $0, HDR+8
    mov %esi, %r12d
    mov $0, %edi; mov %r12d, %esi; mov $HDR, %edx; mov $16, %ecx; mov $F_NEXT, %r8d; lea 1(%r12), %r9d
    call vio_desc
    mov $0, %edi; lea 1(%r12), %esi; mov $DATA, %edx; mov $512, %ecx; mov $(F_NEXT|F_WRITE), %r8d; lea 2(%r12), %r9d
    call vio_desc
    mov $0, %edi; lea 2(%r12), %esi; mov $STATUS, %edx; mov $1, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    pop %rsi
    mov $0, %edi
    call vio_push
    pop %rsi                    # the used idx, pushed as RBX
    mov $0, %edi
    call vio_wait
    mov $DATA, %esi
    mov $16, %ecx
    call putn
    lea m_cap(%rip), %rsi
    call puts
    movl 0x100(%r15), %eax      # config space: capacity (le64), low byte
    call puthex
    mov $'\n', %al
    call putc
    ret

user_main:
    mov $0xc0001000, %r15
    mov $1, %esi
    xor %r8d, %r8d
    call vio_init
    lea m_a(%rip), %rsi
    call puts
    mov $0, %esi
    mov $1, %ebx
    call read0
    lea m_wait(%rip), %rsi
    call puts
1:  movl 0x60(%r15), %eax       # InterruptStatus
    test $2, %eax               # configuration change
    jnz 2f
    pause
    jmp 1b
2:  movl %eax, 0x64(%r15)       # InterruptACK
    lea m_b(%rip), %rsi
    call puts
    mov $3, %esi
    mov $2, %ebx
    call read0
    lea m_c(%rip), %rsi
    call puts
    mov $0, %esi
    mov $3, %ebx
    call read0
    lea m_done(%rip), %rsi
    call puts
    jmp reset

m_a:
    .asciz "a="
m_b:
    .asciz "b="
m_c:
    .asciz "c="
m_cap:
    .asciz " cap="
m_wait:
    .asciz "waiting\n"
m_done:
    .asciz "done\n"
