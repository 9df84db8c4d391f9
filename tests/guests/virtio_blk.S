# Drives a virtio-blk device in MMIO slot 0 from ring 3: read sector 0, write sector 1, flush,
# GET_ID, then prints what it saw and resets:
#   "rd=SS:<16 bytes of sector 0>" "wr=SS" "fl=SS" "id=SS:<20 bytes>" "isr=II" "done"
# (SS = status byte in hex, II = InterruptStatus).
    .include "common.inc"
    .include "virtio.inc"

    .set HDR, 0x600000
    .set DATA, 0x601000
    .set WDATA, 0x603000
    .set IDBUF, 0x604000
    .set STATUS, 0x602000

# blk_req: EAX = type, EBX = status slot (0..3); header at HDR + 16 * slot, sector = slot.
blk_hdr:
    mov %ebx, %edx
    shl $4, %edx
    add $HDR, %edx
    movl %eax, (%rdx)
    movl $0, 4(%rdx)
    movq %rbx, 8(%rdx)
    ret

user_main:
    mov $0xc0001000, %r15
    mov $1, %esi
    xor %r8d, %r8d
    call vio_init

    # 1. read sector 0 into DATA: descriptors 0 (header), 1 (data), 2 (status)
    mov $0, %eax
    mov $0, %ebx
    call blk_hdr
    mov $0, %edi; mov $0, %esi; mov $HDR, %edx; mov $16, %ecx; mov $F_NEXT, %r8d; mov $1, %r9d
    call vio_desc
    mov $0, %edi; mov $1, %esi; mov $DATA, %edx; mov $512, %ecx; mov $(F_NEXT|F_WRITE), %r8d; mov $2, %r9d
    call vio_desc
    mov $0, %edi; mov $2, %esi; mov $STATUS, %edx; mov $1, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    movb $0xee, STATUS
    mov $0, %edi; mov $0, %esi
    call vio_push
    mov $0, %edi; mov $1, %esi
    call vio_wait
    lea m_rd(%rip), %rsi
    call puts
    movb STATUS, %al
    call puthex
    mov $':', %al
    call putc
    mov $DATA, %esi
    mov $16, %ecx
    call putn

    # 2. write "written-by-guest" to sector 1: descriptors 3, 4, 5
    lea wmsg(%rip), %rsi
    mov $WDATA, %edi
    mov $16, %ecx
    call memcpy_small
    mov $1, %eax
    mov $1, %ebx
    call blk_hdr
    mov $0, %edi; mov $3, %esi; mov $(HDR+16), %edx; mov $16, %ecx; mov $F_NEXT, %r8d; mov $4, %r9d
    call vio_desc
    mov $0, %edi; mov $4, %esi; mov $WDATA, %edx; mov $512, %ecx; mov $F_NEXT, %r8d; mov $5, %r9d
    call vio_desc
    mov $0, %edi; mov $5, %esi; mov $(STATUS+1), %edx; mov $1, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    movb $0xee, STATUS+1
    mov $0, %edi; mov $3, %esi
    call vio_push
    mov $0, %edi; mov $2, %esi
    call vio_wait
    lea m_wr(%rip), %rsi
    call puts
    movb STATUS+1, %al
    call puthex

    # 3. flush: descriptors 6, 7
    mov $4, %eax
    mov $2, %ebx
    call blk_hdr
    mov $0, %edi; mov $6, %esi; mov $(HDR+32), %edx; mov $16, %ecx; mov $F_NEXT, %r8d; mov $7, %r9d
    call vio_desc
    mov $0, %edi; mov $7, %esi; mov $(STATUS+2), %edx; mov $1, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    movb $0xee, STATUS+2
    mov $0, %edi; mov $6, %esi
    call vio_push
    mov $0, %edi; mov $3, %esi
    call vio_wait
    lea m_fl(%rip), %rsi
    call puts
    movb STATUS+2, %al
    call puthex

    # 4. GET_ID, reusing descriptors 0, 1, 2
    mov $8, %eax
    mov $3, %ebx
    call blk_hdr
    mov $0, %edi; mov $0, %esi; mov $(HDR+48), %edx; mov $16, %ecx; mov $F_NEXT, %r8d; mov $1, %r9d
    call vio_desc
    mov $0, %edi; mov $1, %esi; mov $IDBUF, %edx; mov $20, %ecx; mov $(F_NEXT|F_WRITE), %r8d; mov $2, %r9d
    call vio_desc
    mov $0, %edi; mov $2, %esi; mov $(STATUS+3), %edx; mov $1, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    movb $0xee, STATUS+3
    mov $0, %edi; mov $0, %esi
    call vio_push
    mov $0, %edi; mov $4, %esi
    call vio_wait
    lea m_id(%rip), %rsi
    call puts
    movb STATUS+3, %al
    call puthex
    mov $':', %al
    call putc
    mov $IDBUF, %esi
    mov $20, %ecx
    call putn

    # InterruptStatus: the used-buffer bit must be set; ack it.
    lea m_isr(%rip), %rsi
    call puts
    movl 0x60(%r15), %eax
    movl %eax, 0x64(%r15)
    call puthex
    lea m_done(%rip), %rsi
    call puts
    jmp reset

wmsg:
    .ascii "written-by-guest"
m_rd:
    .asciz "rd="
m_wr:
    .asciz "\nwr="
m_fl:
    .asciz "\nfl="
m_id:
    .asciz "\nid="
m_isr:
    .asciz "\nisr="
m_done:
    .asciz "\ndone\n"
